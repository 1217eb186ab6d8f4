#!/usr/bin/env bash
# Packs built dape programs with the shared libraries they need into one folder that runs on a node without
# a package manager (a bare GPU node: glibc, libstdc++, the CUDA toolkit and driver, nothing else of ours).
#
#   scripts/gpu_bundle.sh [BUILD_DIR] [OUT_DIR]        (defaults: build, bundle)
#
# OUT_DIR/bin holds the programs (dape, and dape-devices when built with -DDAPE_CUDA=ON), OUT_DIR/lib every
# library they load except the C runtime (glibc, libstdc++, libgcc_s, which any newer node has) and CUDA's
# own libraries (the node's toolkit provides them: docs/gpu.md). OUT_DIR/dape is the entry point: it puts
# OUT_DIR/lib first on the library path and runs bin/dape; OUT_DIR/env.sh does the same for a shell.
# OUT_DIR/tools holds the plotting helpers (DAPE_TOOLS_DIR). The bundle is checked by running
# `OUT_DIR/dape --help` before the script ends.
set -euo pipefail

build=${1:-build}
out=${2:-bundle}
[[ -x $build/dape ]] || { echo "gpu_bundle: $build/dape not found; build it first (cmake --build $build)" >&2; exit 2; }

rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
programs=("$build/dape")
[[ -x $build/dape-devices ]] && programs+=("$build/dape-devices")
cp "${programs[@]}" "$out/bin/"
cp -r tools "$out/tools"

# Libraries the node has (the C runtime) or must provide itself (CUDA: its driver and toolkit versions).
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libresolv\.so|libstdc\+\+\.so|libgcc_s\.so|libcuda\.so|libcudart\.so|libcublas|libcublasLt|libnccl|libnvidia)'
for program in "${programs[@]}"; do
  ldd "$program" | awk '$3 ~ /^\// {print $1, $3}'
done | sort -u | while read -r name path; do
  [[ $name =~ $skip ]] && continue
  cp -L "$path" "$out/lib/$name"
done

cat > "$out/env.sh" <<'EOF'
# Source this to run the bundled programs from a shell: . bundle/env.sh; dape --help
bundle_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export LD_LIBRARY_PATH="$bundle_dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$bundle_dir/bin:$PATH"
export DAPE_TOOLS_DIR="$bundle_dir/tools"
EOF
cat > "$out/dape" <<'EOF'
#!/usr/bin/env bash
bundle_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export LD_LIBRARY_PATH="$bundle_dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export DAPE_TOOLS_DIR="${DAPE_TOOLS_DIR:-$bundle_dir/tools}"
exec "$bundle_dir/bin/dape" "$@"
EOF
chmod +x "$out/dape"
"$out/dape" --help > /dev/null
echo "gpu_bundle: $out: $(ls "$out/bin" | tr '\n' ' ')+ $(ls "$out/lib" | wc -l) libraries, $(du -sh "$out" | cut -f1)"
