"""BOLT's post-link layout of the profile-guided binary, for `pgo.py --bolt`.

`llvm-bolt` rewrites a linked binary from a profile of where its branches went: the code that ran
is laid out together and straight (`ext-tsp` block order, `cdsort` function order), the code that
never ran in the training is split off into its own cold section. The input must keep its
relocations (`-Wl,--emit-relocs`, added to the profile-using build when `--bolt` is given) so that
BOLT may move functions. The profile comes from BOLT's own instrumentation of that binary, run
through the same training as the LLVM profile: a `perf record -b` profile needs LBR, which a VM
rarely exposes.

Tools: Debian's `bolt-19` package (`llvm-bolt-19`, `merge-fdata-19`), or any `llvm-bolt` and
`merge-fdata` on PATH; `--llvm-bolt` names the first, the second is looked for beside it.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

# The layout options (llvm-bolt 19): blocks and functions ordered by the profile, every function's
# never-run blocks and exception paths split off into the cold section, so the pages the request
# path touches hold little else.
OPTIMISE = ["-reorder-blocks=ext-tsp", "-reorder-functions=cdsort", "-split-functions",
            "-split-all-cold", "-split-eh", "-dyno-stats"]
# The instrumented binary writes `<prefix>.<pid>.fdata` when it exits (popgate exits cleanly on
# SIGTERM after its drain); one file per process, merged afterwards.
FDATA_PREFIX = "popgate"
# BOLT's rewrite of the ~23 MB binary (relocations kept) takes under a minute; anything past
# this is a hang.
BOLT_TIMEOUT_S = 600
# The newest LLVM tried first among `llvm-bolt-N` on PATH; BOLT joined LLVM's releases at 14.
NEWEST_LLVM, OLDEST_BOLT_LLVM = 25, 14

# ELF64: the header's size and the two section header fields read (the ELF specification).
ELF_HEADER_BYTES, SHT_RELA, SHF_ALLOC = 64, 4, 0x2


class BoltError(Exception):
    pass


def find_tools(given: str | None) -> tuple[str, str]:
    """(llvm-bolt, merge-fdata): `given` or `$LLVM_BOLT`, else the newest `llvm-bolt[-N]` on PATH;
    `merge-fdata` of the same version, beside it or on PATH."""
    bolt = given or os.environ.get("LLVM_BOLT")
    if bolt is None:
        names = [f"llvm-bolt-{v}" for v in range(NEWEST_LLVM, OLDEST_BOLT_LLVM - 1, -1)] + ["llvm-bolt"]
        bolt = next((p for p in map(shutil.which, names) if p), None)
        if bolt is None:
            raise BoltError("no llvm-bolt found: install one (Debian: apt-get install bolt-19) or "
                            "pass --llvm-bolt")
    elif not (os.path.isfile(bolt) and os.access(bolt, os.X_OK)):
        raise BoltError(f"{bolt}: not an executable llvm-bolt")
    path = Path(bolt).resolve()
    suffix = path.name.removeprefix("llvm-bolt")  # "-19" for Debian's /usr/bin/llvm-bolt-19
    for candidate in (path.with_name(f"merge-fdata{suffix}"), path.with_name("merge-fdata")):
        if candidate.is_file():
            return str(path), str(candidate)
    merge = shutil.which(f"merge-fdata{suffix}")
    if merge is None:
        raise BoltError(f"no merge-fdata beside {path} nor merge-fdata{suffix} on PATH (it comes "
                        "with llvm-bolt: Debian's bolt-N package has both)")
    return str(path), merge


def has_relocations(binary: Path) -> bool:
    """Whether `binary` (ELF64, little-endian) kept its static relocations (`--emit-relocs`): a
    `SHT_RELA` section the loader does not map. `.rela.dyn` and `.rela.plt`, which every
    position-independent binary has, are mapped (`SHF_ALLOC`). BOLT cannot move the functions of
    a binary without them."""
    try:
        with binary.open("rb") as f:
            ident = f.read(ELF_HEADER_BYTES)
            if len(ident) < ELF_HEADER_BYTES or ident[:4] != b"\x7fELF" or ident[4] != 2 or ident[5] != 1:
                raise BoltError(f"{binary}: not a 64-bit little-endian ELF file")
            shoff, = struct.unpack_from("<Q", ident, 0x28)
            shentsize, shnum = struct.unpack_from("<HH", ident, 0x3A)
            f.seek(shoff)
            table = f.read(shentsize * shnum)
    except OSError as e:
        raise BoltError(f"{binary}: cannot read it ({e.strerror})") from e
    if len(table) < shentsize * shnum:
        raise BoltError(f"{binary}: section header table cut short")
    for i in range(shnum):
        sh_type, sh_flags = struct.unpack_from("<IQ", table, i * shentsize + 4)
        if sh_type == SHT_RELA and not sh_flags & SHF_ALLOC:
            return True
    return False


def _run(argv: list[str], what: str) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=BOLT_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise BoltError(f"{what} did not finish in {BOLT_TIMEOUT_S} s") from e
    if done.returncode != 0:
        raise BoltError(f"{what} failed with exit code {done.returncode}:\n{done.stderr[-2000:]}")
    return done.stdout + done.stderr


def instrument(bolt: str, binary: Path, out: Path, fdata_dir: Path) -> None:
    """Writes `out`: `binary` with BOLT's counters, each process of it writing its own profile into
    `fdata_dir` when it exits."""
    if not has_relocations(binary):
        raise BoltError(f"{binary} has no relocations: BOLT needs the build linked with "
                        "-Wl,--emit-relocs (pgo.py --bolt adds it)")
    _run([bolt, str(binary), "-instrument", "-o", str(out),
          f"--instrumentation-file={fdata_dir / FDATA_PREFIX}", "--instrumentation-file-append-pid"],
         "llvm-bolt -instrument")


def profiles(fdata_dir: Path) -> list[Path]:
    return sorted(fdata_dir.glob(f"{FDATA_PREFIX}.*.fdata"))


def merge(merge_fdata: str, fdata: list[Path], out: Path) -> None:
    if not fdata:
        raise BoltError("the instrumented popgate wrote no BOLT profile: it writes one when it exits "
                        "cleanly (SIGTERM, drain); was it killed?")
    _run([merge_fdata, *map(str, fdata), "-o", str(out)], "merge-fdata")
    if out.stat().st_size == 0:
        raise BoltError(f"merge-fdata wrote an empty {out}: the training ran none of popgate's code?")


def optimise(bolt: str, binary: Path, fdata: Path, out: Path) -> str:
    """Writes `out`, `binary` laid out by the profile; returns BOLT's report (its dyno stats)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return _run([bolt, str(binary), "-o", str(out), f"-data={fdata}", *OPTIMISE], "llvm-bolt")
