import assert from "node:assert/strict";
import { createServer } from "node:http";
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { describe, it } from "node:test";
import { loadCanonical } from "../../src/backtest/adapters/index.js";
import { canonicalLines } from "../../src/backtest/trace.js";
import { exportHistory, historyToCanonical, pairWorkload } from "../../src/history/export.js";
import { listHistoryPairs, readHistory, type HistoryWindow } from "../../src/history/sink.js";
import { augur, REPO } from "../cli.js";
import { T0, tempDir } from "../helpers.js";

const window = (overrides: Partial<HistoryWindow>): HistoryWindow => ({
  image: "app",
  user: "amy",
  ts: T0,
  windowMs: 60_000,
  samples: 1,
  stats: { cpu: { max: 0.5, p95: 0.4, mean: 0.3 }, mem: { max: 2e9, p95: 1.9e9, mean: 1.5e9 } },
  limits: {},
  ...overrides,
});

describe("history as a trace", () => {
  it("writes one canonical row per window that the backtest reads back, names with commas and quotes included", async () => {
    const { dir, cleanup } = tempDir();
    try {
      const windows = [
        window({}),
        window({ ts: T0 + 60_000, stats: { cpu: { max: 0.7 }, mem: { max: 2.5e9 } }, limits: { mem: 4e9 } }),
        window({ image: 'registry:5000/team/app,"v2"', user: " bob", stats: { cpu: { max: 1.5 } } }),
      ];
      const trace = historyToCanonical(windows);
      assert.deepEqual({ rows: trace.rows, pairs: trace.pairs, refused: trace.refused }, { rows: 3, pairs: 2, refused: [] });
      const file = join(dir, "history.csv");
      writeFileSync(file, [...canonicalLines(trace.trace)].join("\n") + "\n");
      const loaded = await loadCanonical(file);
      assert.deepEqual(loaded.rejected, []);
      const amy = loaded.workloads.find((w) => w.user === "amy")!;
      assert.equal(amy.workload, pairWorkload("app", "amy"));
      assert.deepEqual([...amy.ts], [T0, T0 + 60_000]);
      assert.deepEqual([...amy.values.cpu!], [0.5, 0.7]);
      assert.deepEqual([...amy.values.mem!], [2e9, 2.5e9]);
      assert.ok(Number.isNaN(amy.limits.mem![0]!) && amy.limits.mem![1] === 4e9, "a limit where the window knew it, none elsewhere");
      const odd = loaded.workloads.find((w) => w.user === " bob")!;
      assert.equal(odd.image, 'registry:5000/team/app,"v2"');
      const oddMem = odd.values.mem;
      assert.ok(oddMem === undefined || Number.isNaN(oddMem[0]!), "a resource the window lacks is not measured, not zero");
      // Another statistic on request.
      const p95File = join(dir, "p95.csv");
      writeFileSync(p95File, [...canonicalLines(historyToCanonical([window({})], "p95").trace)].join("\n") + "\n");
      const p95 = (await loadCanonical(p95File)).workloads[0]!;
      assert.deepEqual([p95.values.cpu![0], p95.values.mem![0]], [0.4, 1.9e9]);
    } finally {
      cleanup();
    }
  });

  it("refuses hostile windows with a reason each and keeps the rest", () => {
    const trace = historyToCanonical([
      window({ image: "a|b" }),
      window({ user: "new\nline" }),
      window({ image: "" }),
      window({ ts: Number.NaN }),
      window({ stats: {} }),
      window({ image: "x".repeat(600) }),
      window({}),
    ]);
    assert.equal(trace.rows, 1);
    assert.equal(trace.refused.length, 6);
    for (const refused of trace.refused) assert.ok(refused.reason.length > 0 && refused.image.length <= 80);
    assert.throws(() => historyToCanonical([window({})], "median" as never), /stat must be one of/);
    assert.match(pairWorkload("i".repeat(400), "u".repeat(400)), /^pair-[0-9a-f]{16}$/, "a long pair gets a digest, still a valid id");
  });

  it("reads the export API and refuses what is not one (not JSON, ragged series)", async () => {
    const bodies = [
      `{"metric":{"__name__":"m_cpu_max","image":"app","user":"amy"},"values":[0.5],"timestamps":[${T0}]}\n{"metric":{"__name__":"m_samples","image":"app","user":"amy"},"values":[3],"timestamps":[${T0}]}\n`,
      "<html>oops</html>\n",
      `{"metric":{"__name__":"m_cpu_max","image":"app","user":"amy"},"values":[0.5,1],"timestamps":[${T0}]}\n`,
      `{"metric":{"__name__":"m_cpu_max","image":"app","user":"amy"},"values":["0.5"],"timestamps":[${T0}]}\n`,
    ];
    let next = 0;
    const server = createServer((_request, response) => response.end(bodies[next++]));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    try {
      const windows = await readHistory({ url, measurement: "m", fromMs: 0, toMs: T0 + 1 });
      assert.deepEqual(windows.map((w) => ({ ts: w.ts, samples: w.samples, cpu: w.stats.cpu?.max })), [{ ts: T0, samples: 3, cpu: 0.5 }]);
      await assert.rejects(readHistory({ url, measurement: "m", fromMs: 0, toMs: 1 }), /not JSON/);
      await assert.rejects(readHistory({ url, measurement: "m", fromMs: 0, toMs: 1 }), /equal length/);
      await assert.rejects(readHistory({ url, measurement: "m", fromMs: 0, toMs: 1 }), /equal length/);
    } finally {
      server.close();
    }
  });

  it("exports a pair at a time: the series listed, each pair's windows asked for alone, answers read as they arrive", async () => {
    const requests: string[] = [];
    const pairs = [
      { image: "app", user: "amy" },
      { image: "app", user: "bëëëëëëëb" }, // two-byte characters: some split between the answer's pieces
      { image: 'we"ird,img', user: "amy" },
    ];
    // Each pair's series: cpu_max and samples over three windows; the answer is sent in 7-byte pieces.
    const seriesOf = (image: string, user: string) =>
      ["cpu_max", "samples"]
        .map((field, f) => JSON.stringify({ metric: { __name__: `m_${field}`, image, user }, values: [0, 1, 2].map((i) => (f === 0 ? 0.25 * (i + 1) + (user === "amy" ? 0 : 1) : 3)), timestamps: [0, 1, 2].map((i) => T0 + i * 300_000) }))
        .join("\n") + "\n";
    let seriesAnswer: string | null = null;
    const server = createServer((request, response) => {
      const url = new URL(request.url ?? "/", "http://x");
      requests.push(`${url.pathname} ${url.searchParams.get("match[]")}`);
      if (url.pathname === "/api/v1/series") {
        response.end(seriesAnswer ?? JSON.stringify({ status: "success", data: [...pairs, pairs[0]].flatMap((pair) => ["m_cpu_max", "m_samples"].map((name) => ({ __name__: name, ...pair }))) }));
        return;
      }
      const match = url.searchParams.get("match[]") ?? "";
      const pair = pairs.find((p) => match.includes(`image=${JSON.stringify(p.image)}`) && match.includes(`user=${JSON.stringify(p.user)}`));
      const body = Buffer.from(pair ? seriesOf(pair.image, pair.user) : "");
      let at = 0;
      const send = () => {
        if (at >= body.length) return void response.end();
        response.write(body.subarray(at, (at += 7)));
        setImmediate(send);
      };
      send();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    const query = { url, measurement: "m", fromMs: T0, toMs: T0 + 3_600_000 };
    try {
      assert.deepEqual(await listHistoryPairs(query), [pairs[0], pairs[1], pairs[2]], "each pair once, sorted");
      const lines: string[] = [];
      const summary = await exportHistory(query, "max", (line) => void lines.push(line));
      assert.deepEqual({ windows: summary.windows, rows: summary.rows, pairs: summary.pairs, refused: summary.refused }, { windows: 9, rows: 9, pairs: 3, refused: 0 });
      assert.equal(lines.filter((line) => line.startsWith("ts,")).length, 1, "one header");
      assert.equal(lines.length, 10);
      const exports = requests.filter((line) => line.startsWith("/api/v1/export"));
      assert.equal(exports.length, 3, "one export request per pair");
      for (const pair of pairs) assert.ok(exports.some((line) => line.includes(`image=${JSON.stringify(pair.image)}`) && line.includes(`user=${JSON.stringify(pair.user)}`)));
      // Read back by the backtest: the pairs' peaks, the odd image quoted.
      const { dir, cleanup } = tempDir();
      try {
        writeFileSync(join(dir, "h.csv"), lines.join("\n") + "\n");
        const trace = await loadCanonical(join(dir, "h.csv"));
        assert.deepEqual(trace.rejected, []);
        assert.deepEqual([...trace.workloads.find((w) => w.user === "bëëëëëëëb")!.values.cpu!], [1.25, 1.5, 1.75]);
        assert.ok(trace.workloads.some((w) => w.image === 'we"ird,img'));
      } finally {
        cleanup();
      }
      // The same through Flux: one count per pair.
      const fluxServer = createServer((request, response) => {
        let body = "";
        request.on("data", (chunk: Buffer) => (body += chunk.toString()));
        request.on("end", () => {
          const flux = (JSON.parse(body) as { query: string }).query;
          assert.ok(flux.includes('r._field == "samples"') && flux.includes('group(columns: ["image", "user"])') && flux.includes("count()"), flux);
          response.writeHead(200, { "content-type": "text/csv" }).end(["#datatype,string,long,long,string,string", ",result,table,_value,image,user", ",_result,0,3,app,amy", ",_result,1,3,app,bëëëëëëëb", ""].join("\r\n"));
        });
      });
      await new Promise<void>((resolve) => fluxServer.listen(0, "127.0.0.1", resolve));
      try {
        const fluxUrl = `http://127.0.0.1:${(fluxServer.address() as { port: number }).port}`;
        assert.deepEqual(await listHistoryPairs({ ...query, url: fluxUrl, query: "flux" }), [pairs[0], pairs[1]]);
      } finally {
        fluxServer.close();
      }
      seriesAnswer = "<html>busy</html>";
      await assert.rejects(listHistoryPairs(query), /series list .* is not JSON/);
      seriesAnswer = JSON.stringify({ status: "success", data: [{ __name__: "m_cpu_max", image: "app" }] });
      await assert.rejects(listHistoryPairs(query), /without string image and user labels/);
      seriesAnswer = JSON.stringify({ status: "error", error: "bad match" });
      await assert.rejects(listHistoryPairs(query), /is not \{status: "success"/);
      // Nothing in the range: a trace of a header alone.
      seriesAnswer = JSON.stringify({ status: "success", data: [] });
      const empty: string[] = [];
      assert.equal((await exportHistory(query, "max", (line) => void empty.push(line))).rows, 0);
      assert.deepEqual(empty.map((line) => line.split(",")[0]), ["ts"]);
    } finally {
      server.close();
    }
  });

  it("reads InfluxDB 2 with Flux: quoted filters, annotated CSV of several tables, hostile answers refused", async () => {
    const at = new Date(T0).toISOString();
    // Annotated CSV as /api/v2/query answers: one block per schema (double and long _value).
    const table = (valueType: string, rows: string[]) => [
      "#group,false,false,false,false,true,true,true",
      `#datatype,string,long,dateTime:RFC3339,${valueType},string,string,string`,
      "#default,_result,,,,,,",
      ",result,table,_time,_value,_field,image,user",
      ...rows.map((row) => `${row},"a""b\${x}",amy`),
      "",
    ];
    const good = [
      ...table("double", [`,,0,${at},0.5,cpu_max`, `,,1,${at},2000000000,mem_max`]),
      ...table("long", [`,,2,${at},3,samples`, `,,3,${at},300000,window_ms`]),
    ].join("\r\n");
    const textValue = good.replace("#datatype,string,long,dateTime:RFC3339,double", "#datatype,string,long,dateTime:RFC3339,string").replace(",0.5,cpu_max", ",lots,cpu_max");
    const answers: Array<[number, string]> = [[200, good], [200, textValue], [500, "{\"code\":\"internal error\",\"message\":\"boom\"}"], [401, "{\"code\":\"unauthorized\",\"message\":\"unauthorized access\"}"]];
    const queries: Array<{ url: string; query: string; auth?: string }> = [];
    let next = 0;
    const server = createServer((request, response) => {
      let body = "";
      request.on("data", (chunk: Buffer) => (body += chunk.toString()));
      request.on("end", () => {
        queries.push({ url: request.url ?? "", query: (JSON.parse(body) as { query: string }).query, auth: request.headers.authorization });
        const [status, text] = answers[next++]!;
        response.writeHead(status, { "content-type": status === 200 ? "text/csv; charset=utf-8" : "application/json" }).end(text);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    const image = 'a"b${x}';
    const options = { url, measurement: "augur_window", fromMs: T0, toMs: T0, image, query: "flux" as const, org: "ops", bucket: "hist", token: "secret-token" };
    try {
      const windows = await readHistory(options);
      assert.deepEqual(windows, [{ image, user: "amy", ts: T0, windowMs: 300_000, samples: 3, stats: { cpu: { max: 0.5 }, mem: { max: 2e9 } }, limits: {} }]);
      const { url: path, query, auth } = queries[0]!;
      assert.match(path, /^\/api\/v2\/query\?org=ops/);
      assert.equal(auth, "Token secret-token");
      assert.ok(query.includes('from(bucket: "hist")'), query);
      assert.ok(query.includes('r._measurement == "augur_window"'), query);
      assert.ok(query.includes('r.image == "a\\"b\\${x}"'), `the image is one quoted Flux string: ${query}`);
      assert.ok(query.includes(`stop: time(v: "${new Date(T0 + 1).toISOString()}")`), "the last window start is included");
      await assert.rejects(readHistory(options), (error: Error) => error.name === "ValidationError" && /not \{_time, _field, numeric _value/.test(error.message));
      await assert.rejects(readHistory(options), (error: Error) => error.name === "TransientError" && /boom|500/.test(error.message));
      await assert.rejects(readHistory(options), (error: Error) => error.name === "ValidationError" && /unauthorized/.test(error.message));
    } finally {
      server.close();
    }
  });

  it("augur history export exits 2 on bad times, stats, ids and a config without history", () => {
    const kafka = join(REPO, "pipelines/kafka.yaml");
    for (const args of [
      ["--from", "yesterday", "--to", "2013-08-02"],
      ["--from", "2013-08-02", "--to", "2013-08-01"],
      ["--from", "2013-08-01", "--to", "2013-08-02", "--stat", "median"],
      ["--from", "2013-08-01", "--to", "2013-08-02", "--image", "a|b"],
      ["--from", "2013-08-01; rm -rf /", "--to", "2013-08-02"],
      ["--from", "2013-08-01", "--to", "2013-08-02", "--config", join(REPO, "pipelines/local.yaml")],
    ]) {
      const result = augur(["history", "export", "--config", kafka, "--out", "/dev/null", ...args]);
      assert.equal(result.status, 2, `${args.join(" ")}: ${result.stderr}`);
      assert.match(result.stderr, /^augur: /);
    }
  });
});
