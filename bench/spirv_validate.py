#!/usr/bin/env python3
"""Validates the SPIR-V kernels CubeCL compiled, from its compilation log, with spirv-val.

Why the `vulkan` build crashes on Mesa's lavapipe: run it there with CubeCL's compilation log on
(a `cubecl.toml` in the working folder)

    [compilation.logger]
    level = "full"
    file = "compile.log"

    masklm bench --config configs/tiny.toml --set train.backend=vulkan --steps 1 --warmup 1

then `python3 bench/spirv_validate.py compile.log` assembles each logged kernel (`spirv-as`,
SPIR-V 1.6) and validates it for Vulkan 1.3 (`spirv-val`; Debian: apt-get install spirv-tools),
printing one line per kernel. The last kernel logged is the one being compiled when the
process crashed.
"""
import re
import subprocess
import sys
import tempfile


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    log = open(sys.argv[1], encoding="utf-8", errors="replace").read()
    kernels = re.findall(r"\[START_KERNEL_COMPILATION\]\nname: (\S+).*?```spirv\n(.*?)```", log, re.S)
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        asm, spv = f"{tmp}/k.spvasm", f"{tmp}/k.spv"
        for name, source in kernels:
            with open(asm, "w") as f:
                f.write(source)
            short = name.split("::")[-1]
            a = subprocess.run(["spirv-as", "--target-env", "spv1.6", asm, "-o", spv],
                               capture_output=True, text=True)
            if a.returncode != 0:
                bad += 1
                print(f"{short}: does not assemble: {a.stderr.strip()}")
                continue
            v = subprocess.run(["spirv-val", "--target-env", "vulkan1.3", spv], capture_output=True, text=True)
            if v.returncode != 0:
                bad += 1
            print(f"{short}: {'valid' if v.returncode == 0 else 'INVALID: ' + v.stderr.strip()}")
    print(f"{len(kernels)} kernels, {bad} invalid")


if __name__ == "__main__":
    main()
