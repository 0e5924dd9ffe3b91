// libmime (mailparser's MIME helper, a direct dependency for RFC 2047 decoding) ships no types.
declare module 'libmime' {
  const libmime: {
    decodeWords(value: string): string;
    /** RFC 2047 encoded-words, split so that none is longer than maxLength. */
    encodeWord(value: string, encoding: 'Q' | 'B', maxLength?: number): string;
    /** A structured header value: its value and its parameters (names lower-cased). */
    parseHeaderValue(value: string): { value: string; params: Record<string, string> };
  };
  export default libmime;
}
