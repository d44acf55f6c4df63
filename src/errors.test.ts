import { describe, expect, it } from "vitest";
import { ErrorCode, MeshguardError, isMeshguardError } from "./errors.js";

class OtherError extends MeshguardError {}

describe("MeshguardError", () => {
  it("carries code, hint and cause, and puts the hint in the message", () => {
    const cause = new Error("root");
    const e = new MeshguardError(ErrorCode.NO_PEER, "x is not a peer", { hint: "check the policy", cause });
    expect(e.code).toBe("MESHGUARD_NO_PEER");
    expect(e.hint).toBe("check the policy");
    expect(e.cause).toBe(cause);
    expect(e.message).toContain("hint: check the policy");
    expect(isMeshguardError(e, ErrorCode.NO_PEER)).toBe(true);
    expect(isMeshguardError(e, ErrorCode.CLOSED)).toBe(false);
  });

  it("instanceof works across copies of the class and respects subclasses", () => {
    const e = new OtherError(ErrorCode.INTERNAL, "m");
    expect(e instanceof MeshguardError).toBe(true);
    expect(e instanceof OtherError).toBe(true);
    expect(new MeshguardError(ErrorCode.INTERNAL, "m") instanceof OtherError).toBe(false);
    // A second copy of the package: a structurally identical object with the brand.
    const foreign = Object.defineProperty(new Error("m"), Symbol.for("meshguard.error"), { value: ["MeshguardError"] });
    expect(foreign instanceof MeshguardError).toBe(true);
    expect(new Error("m") instanceof MeshguardError).toBe(false);
    expect((null as unknown) instanceof MeshguardError).toBe(false);
  });
});
