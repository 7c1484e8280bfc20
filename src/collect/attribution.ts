import { z } from "zod";
import { regexSchema } from "../config/load.js";
import { ConfigError } from "../core/errors.js";
import { validateId } from "../core/keys.js";

/**
 * Templates name where an image or user id comes from: `{name}` takes a
 * variable, `{a|b}` the first of a and b that is set, and text outside
 * braces is kept. Variables: named groups of the rule's regular expressions,
 * `env.NAME` (process environment, the plain-process stand-in for a
 * container label), `user` (uid → name), `uid`, `exeName`, `comm`, `pid`,
 * `path` (cgroup path).
 */
export type Variables = (name: string) => string | undefined;

const PLACEHOLDER = /\{([^{}]+)\}/g;

export function checkTemplate(template: string): string {
  const stripped = template.replace(PLACEHOLDER, "");
  if (/[{}]/.test(stripped)) throw new ConfigError(`template ${JSON.stringify(template)} has an unbalanced brace`);
  return template;
}

/** Renders a template; null when a placeholder has no value (the rule does not apply). */
export function renderTemplate(template: string, variables: Variables): string | null {
  let missing = false;
  const rendered = template.replace(PLACEHOLDER, (_, names: string) => {
    for (const name of names.split("|")) {
      const value = variables(name.trim());
      if (value !== undefined && value !== "") return value;
    }
    missing = true;
    return "";
  });
  return missing ? null : rendered;
}

const regex = regexSchema;

const template = z.string().min(1).max(256).transform((value, ctx) => {
  try {
    return checkTemplate(value);
  } catch (error) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: (error as Error).message });
    return z.NEVER;
  }
});

export const cgroupRuleSchema = z
  .object({
    /** Matched against the cgroup path ("/kubepods/…"); named groups become variables. */
    pattern: regex,
    image: template.default("{image}"),
    user: template.default("{user}"),
  })
  .strict();

export const processRuleSchema = z
  .object({
    match: z
      .object({
        exe: regex.optional(),
        comm: regex.optional(),
        /** The process must have this environment variable. */
        env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "an environment variable name").optional(),
        uids: z.array(z.number().int().nonnegative()).optional(),
      })
      .strict()
      .default({}),
    image: template,
    user: template.default("{user}"),
  })
  .strict();

export type CgroupRule = z.infer<typeof cgroupRuleSchema>;
export type ProcessRule = z.infer<typeof processRuleSchema>;

export interface Attribution {
  image: string;
  user: string;
}

/** Validates rendered ids; a rule that renders a bad id is skipped, never trusted. */
function toAttribution(image: string | null, user: string | null): Attribution | null {
  if (image === null || user === null) return null;
  try {
    return { image: validateId("image", image), user: validateId("user", user) };
  } catch {
    return null;
  }
}

function groupsOf(match: RegExpExecArray | null): Record<string, string> {
  return match?.groups ? Object.fromEntries(Object.entries(match.groups).filter(([, v]) => v !== undefined)) : {};
}

export function attributeCgroup(rules: CgroupRule[], path: string, base: Variables): Attribution | null {
  for (const rule of rules) {
    const match = rule.pattern.exec(path);
    if (!match) continue;
    const groups = groupsOf(match);
    const variables: Variables = (name) => groups[name] ?? (name === "path" ? path : base(name));
    const attribution = toAttribution(renderTemplate(rule.image, variables), renderTemplate(rule.user, variables));
    if (attribution) return attribution;
  }
  return null;
}

export interface ProcessFacts {
  pid: number;
  exe: string;
  comm: string;
  uid: number;
  userName: string | undefined;
  environ: () => Map<string, string>;
}

export function attributeProcess(rules: ProcessRule[], facts: ProcessFacts): Attribution | null {
  for (const rule of rules) {
    const { exe, comm, env, uids } = rule.match;
    if (uids && !uids.includes(facts.uid)) continue;
    const exeMatch = exe ? exe.exec(facts.exe) : null;
    if (exe && !exeMatch) continue;
    const commMatch = comm ? comm.exec(facts.comm) : null;
    if (comm && !commMatch) continue;
    if (env && !facts.environ().has(env)) continue;
    const groups = { ...groupsOf(exeMatch), ...groupsOf(commMatch) };
    const variables: Variables = (name) => {
      if (name in groups) return groups[name];
      if (name.startsWith("env.")) return facts.environ().get(name.slice(4));
      switch (name) {
        case "user":
          return facts.userName ?? String(facts.uid);
        case "uid":
          return String(facts.uid);
        case "exeName":
          return facts.exe.slice(facts.exe.lastIndexOf("/") + 1);
        case "comm":
          return facts.comm;
        case "pid":
          return String(facts.pid);
        default:
          return undefined;
      }
    };
    const attribution = toAttribution(renderTemplate(rule.image, variables), renderTemplate(rule.user, variables));
    if (attribution) return attribution;
  }
  return null;
}
