/** asl-validator 4's default export (the package's own types are not resolvable under NodeNext). */
declare module 'asl-validator' {
  export default function aslValidator(
    definition: unknown,
    options?: { checkArn?: boolean; checkPaths?: boolean },
  ): { isValid: boolean; errors: unknown[]; errorsText(separator?: string): string };
}
