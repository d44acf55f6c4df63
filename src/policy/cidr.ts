/**
 * IP addresses and CIDR ranges for host patterns. An IPv4-mapped IPv6
 * address (::ffff:10.0.0.1) is treated as the IPv4 address it carries, so a
 * rule about 10.0.0.0/8 cannot be sidestepped by writing the address in IPv6.
 */

/** An address as 8 groups of 16 bits; IPv4 is held mapped (::ffff:a.b.c.d). */
export type IpWords = Uint16Array;

const V4_RE = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

function v4(s: string): number[] | undefined {
  const m = V4_RE.exec(s);
  if (!m) return undefined;
  const b = m.slice(1).map(Number);
  // Leading zeros are ambiguous (octal in some resolvers): refuse them.
  if (b.some((x, i) => x > 255 || (m[i + 1]!.length > 1 && m[i + 1]![0] === "0"))) return undefined;
  return b;
}

/** parseIp reads an IPv4 or IPv6 literal (brackets and a zone are refused); undefined if it is not one. */
export function parseIp(s: string): IpWords | undefined {
  const w = new Uint16Array(8);
  const four = v4(s);
  if (four) {
    w[5] = 0xffff;
    w[6] = (four[0]! << 8) | four[1]!;
    w[7] = (four[2]! << 8) | four[3]!;
    return w;
  }
  if (!s.includes(":") || s.length > 45 || /[^0-9a-fA-F:.]/.test(s)) return undefined;
  const halves = s.split("::");
  if (halves.length > 2) return undefined;
  const groups = (part: string): number[] | undefined => {
    if (part === "") return [];
    const out: number[] = [];
    const items = part.split(":");
    for (let i = 0; i < items.length; i++) {
      const it = items[i]!;
      if (i === items.length - 1 && it.includes(".")) {
        const b = v4(it);
        if (!b) return undefined;
        out.push((b[0]! << 8) | b[1]!, (b[2]! << 8) | b[3]!);
      } else if (/^[0-9a-fA-F]{1,4}$/.test(it)) out.push(parseInt(it, 16));
      else return undefined;
    }
    return out;
  };
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  if (!head || !tail) return undefined;
  if (halves.length === 1 ? head.length !== 8 : head.length + tail.length > 7) return undefined;
  head.forEach((g, i) => (w[i] = g));
  tail.forEach((g, i) => (w[8 - tail.length + i] = g));
  return w;
}

/** isIpLiteral tells whether a host is an IP address rather than a name. */
export function isIpLiteral(s: string): boolean {
  return parseIp(s) !== undefined;
}

/** A compiled range: the network address and the prefix length in bits (of 128). */
export interface Cidr {
  net: IpWords;
  bits: number;
  text: string;
}

/** parseCidr reads "10.0.0.0/8", "fd7a::/48" or a bare address (a /32 or /128); undefined if invalid. */
export function parseCidr(s: string): Cidr | undefined {
  const slash = s.indexOf("/");
  const addr = slash < 0 ? s : s.slice(0, slash);
  const ip = parseIp(addr);
  if (!ip) return undefined;
  const isV4 = v4(addr) !== undefined;
  const max = isV4 ? 32 : 128;
  let len = max;
  if (slash >= 0) {
    const p = s.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || Number(p) > max) return undefined;
    len = Number(p);
  }
  const bits = isV4 ? 96 + len : len;
  const net = new Uint16Array(ip);
  for (let i = 0; i < 8; i++) net[i] = net[i]! & maskWord(bits, i);
  return { net, bits, text: s };
}

function maskWord(bits: number, i: number): number {
  const left = bits - i * 16;
  if (left >= 16) return 0xffff;
  if (left <= 0) return 0;
  return (0xffff << (16 - left)) & 0xffff;
}

/** cidrContains tells whether `ip` lies in `c`. */
export function cidrContains(c: Cidr, ip: IpWords): boolean {
  for (let i = 0; i < 8; i++) if ((ip[i]! & maskWord(c.bits, i)) !== c.net[i]) return false;
  return true;
}
