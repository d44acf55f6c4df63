// Types of ./py-openai.mjs for the TypeScript tests (see that file's header).
export const PY_OPENAI_VERSION: string;
export const PY_OPENAI_DIR: string;
export const PY_OPENAI_PYTHON: string;
export function installedVersion(): string | undefined;
export function ready(): boolean;
export function venvUnavailable(log?: (line: string) => void): string | undefined;
export function ensure(log?: (line: string) => void): boolean;
