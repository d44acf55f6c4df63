/**
 * meshguard/connect: clients outside the tailnet reach tailnet services
 * through a local listener, with the identity of a node of their own.
 */
export { connect, type Connection } from "./connect.js";
export type { ForwardInfo } from "./forward.js";
export type { ConnectOptions } from "./options.js";
