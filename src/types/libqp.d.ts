// libqp (mailsplit's quoted-printable codec, a direct dependency so that parse.ts decodes a part
// exactly as mailparser does) ships no types.
declare module 'libqp' {
  const libqp: {
    /** Quoted-printable to bytes: soft breaks joined, whitespace before line ends dropped. */
    decode(input: Buffer | string): Buffer;
  };
  export default libqp;
}
