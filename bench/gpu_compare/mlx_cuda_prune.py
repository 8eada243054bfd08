#!/usr/bin/env python3
"""Zeroes the device code of the GPU architectures we do not run in a CUDA library.

    python3 bench/gpu_compare/mlx_cuda_prune.py libmlx.so [--keep 90] [--out PATH]

Why: the mlx-cuda-13 wheel's libmlx.so (145 MB) embeds, in its .nv_fatbin
section, cubins for sm_75/80/90/100/120/121 and compute_120 PTX (64 MB, each
entry zstd-compressed already). A device call carries at most 64 MiB with a
46 MB tree, and only sm_90 (H100/H200) runs there. Zeroing the payloads of the
other entries, while every container and entry header and every size stays as
it was, keeps the fatbin structure valid (the CUDA runtime picks the sm_90
entry by its header and never decompresses the others) and makes 58 MB of the
file compress to nothing under xz.

Fatbin layout (as nvcc writes it): a run of containers, each a 16-byte header
(magic 0xBA55ED50, u16 version, u16 header size, u64 payload size) followed by
entries; an entry header starts with u16 kind (1 PTX, 2 cubin), u16 version,
u32 header size, u64 payload size, and holds the sm number as u32 at byte 28.
Edits the file in place unless --out is given; prints what it zeroed and kept.
"""
import argparse
import struct
import sys

MAGIC = 0xBA55ED50


def fatbin_section(b):
    """(offset, size) of .nv_fatbin in an ELF64 little-endian file, or None."""
    if b[:4] != b"\x7fELF" or b[4] != 2 or b[5] != 1:
        raise SystemExit("not an ELF64 little-endian file")
    shoff, = struct.unpack_from("<Q", b, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", b, 0x3A)

    def sh(i):
        return struct.unpack_from("<IIQQQQIIQQ", b, shoff + i * shentsize)

    strtab = sh(shstrndx)[4]
    for i in range(shnum):
        s = sh(i)
        name = bytes(b[strtab + s[0]:b.index(0, strtab + s[0])])
        if name == b".nv_fatbin":
            return s[4], s[5]
    return None


def prune(b, keep):
    sec = fatbin_section(b)
    if sec is None:
        raise SystemExit("no .nv_fatbin section")
    p, end_sec = sec[0], sec[0] + sec[1]
    zeroed = kept = containers = 0
    archs = {}
    while p + 16 <= end_sec:
        magic, _ver, hsize, fsize = struct.unpack_from("<IHHQ", b, p)
        if magic != MAGIC:  # alignment padding between containers
            p += 8
            continue
        containers += 1
        q, end = p + hsize, p + hsize + fsize
        while q + 32 <= end:
            kind, _v, ehs, esz = struct.unpack_from("<HHIQ", b, q)
            arch, = struct.unpack_from("<I", b, q + 28)
            if ehs == 0 or q + ehs + esz > end:
                raise SystemExit(f"malformed fatbin entry at 0x{q:x}")
            key = ("ptx" if kind == 1 else "sm") + f"_{arch}"
            if arch in keep:
                kept += esz
            else:
                b[q + ehs:q + ehs + esz] = bytes(esz)
                zeroed += esz
                key += " (zeroed)"
            archs[key] = archs.get(key, 0) + esz
            q += ehs + esz
        p = end
    return containers, zeroed, kept, archs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lib")
    ap.add_argument("--keep", default="90", help="comma-separated sm numbers to keep (default 90)")
    ap.add_argument("--out")
    a = ap.parse_args()
    keep = {int(x) for x in a.keep.split(",") if x}
    b = bytearray(open(a.lib, "rb").read())
    containers, zeroed, kept, archs = prune(b, keep)
    if kept == 0:
        raise SystemExit(f"no entry for sm {sorted(keep)}: the library would not run there")
    with open(a.out or a.lib, "wb") as f:
        f.write(b)
    for k in sorted(archs):
        print(f"  {k}: {archs[k]} bytes")
    print(f"{containers} fatbin containers; zeroed {zeroed} bytes, kept {kept}", file=sys.stderr)


if __name__ == "__main__":
    main()
