// oidc-provider ships no type declarations; the tests use a small part of it (./oauth-server.ts).
declare module "oidc-provider";
