// libmime (mailparser's MIME helper, a direct dependency for RFC 2047 decoding) ships no types.
declare module 'libmime' {
  const libmime: {
    decodeWords(value: string): string;
  };
  export default libmime;
}
