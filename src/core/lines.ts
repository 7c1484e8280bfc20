// Lines out of a stream of bytes, as they arrive: a trace file or an HTTP
// answer may be far larger than one string can hold.

/**
 * Calls `onLine` with each line of the UTF-8 chunks (without its "\n";
 * characters split between chunks are joined, a leading BOM dropped), keeping the unfinished rest
 * for the next chunk; throws `tooLong()` when that rest outgrows `maxChars`
 * (a file with no line breaks is refused, not held in memory).
 */
export async function forEachLineOfChunks(chunks: AsyncIterable<Uint8Array>, maxChars: number, tooLong: () => Error, onLine: (line: string) => void): Promise<void> {
  const decoder = new TextDecoder("utf-8"); // a leading byte-order mark is dropped
  let rest = "";
  for await (const chunk of chunks) {
    const text = rest + decoder.decode(chunk, { stream: true });
    let start = 0;
    for (let end = text.indexOf("\n"); end >= 0; end = text.indexOf("\n", start)) {
      onLine(text.slice(start, end));
      start = end + 1;
    }
    rest = text.slice(start);
    if (rest.length > maxChars) throw tooLong();
  }
  rest += decoder.decode();
  if (rest.length > 0) onLine(rest);
}
