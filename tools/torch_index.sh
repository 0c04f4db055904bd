#!/bin/sh
# Which torch build `make` installs, and why, in one line on stderr; prints the pip index option on stdout.
#   usage: tools/torch_index.sh PYTHON TORCH_BUILD TORCH_CPU_INDEX
#   TORCH_BUILD: auto (CPU index when there is no NVIDIA GPU and it answers), cpu, pypi
py="$1"; build="$2"; cpu_index="$3"
say() { echo "torch: $*" >&2; }
reachable() {
  "$py" -c "import urllib.request; urllib.request.urlopen('$cpu_index/torch/', timeout=5)" >/dev/null 2>&1
}
case "$build" in
  cpu)
    say "CPU build from $cpu_index (TORCH_BUILD=cpu)"
    echo "--index-url $cpu_index" ;;
  pypi)
    say "the default index's build (TORCH_BUILD=pypi; on Linux a CUDA build, about 6.7 GB)" ;;
  auto)
    if command -v nvidia-smi >/dev/null 2>&1; then
      say "an NVIDIA GPU is here (nvidia-smi): the default index's CUDA build"
    elif reachable; then
      say "no NVIDIA GPU: the CPU build from $cpu_index (about 5 GB smaller than the CUDA build)"
      echo "--index-url $cpu_index"
    else
      say "no NVIDIA GPU, but the CPU index $cpu_index did not answer within 5 s (offline, proxy or"
      say "  firewall?): installing the default index's build instead, a CUDA build of about 6.7 GB that also"
      say "  runs on CPU. For the smaller CPU build: rm -rf .venv && make TORCH_BUILD=cpu once that index is"
      say "  reachable, or point TORCH_CPU_INDEX at a mirror of it."
    fi ;;
  *)
    say "unknown TORCH_BUILD=$build: use auto, cpu or pypi"; exit 2 ;;
esac
