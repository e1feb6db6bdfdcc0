#!/usr/bin/env python3
"""The Nix expression of the benchmarks' tiny-path set, written to OUT.

    scripts/nix-tiny-set.py OUT LEAVES

LEAVES leaf derivations (one file of a few bytes each), LEAVES/20 group paths that
each reference 20 leaves, and one top path referencing the groups (2,000 leaves:
2,101 paths). Plain `builtins.derivation`s with `/bin/sh` as builder, so the real
Nix builds them with no network and no nixpkgs. Used by scripts/bench-scale-nix and
scripts/bench-nix-floors, which must measure the same set.
"""
import sys

out, n = sys.argv[1], int(sys.argv[2])
groups = max(1, n // 20)
with open(out, "w") as fh:
    fh.write('let\n  mk = name: script: builtins.derivation { inherit name; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" script ]; };\n')
    for i in range(n):
        fh.write(f'  l{i} = mk "scale-leaf-{i:05d}" "echo leaf {i} > $out";\n')
    for g in range(groups):
        members = " ".join("${l%d}" % i for i in range(n) if i % groups == g)
        fh.write(f'  g{g} = mk "scale-group-{g:04d}" "echo {members} > $out";\n')
    tops = " ".join("${g%d}" % g for g in range(groups))
    fh.write(f'in mk "scale-top-{n}" "echo {tops} > $out"\n')
