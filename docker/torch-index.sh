#!/bin/sh
# The index torch 2.13.0 is installed from, printed for docker/Dockerfile's deps stage:
#   torch-index.sh TORCH_VARIANT [TORCH_INDEX_URL]
# TORCH_INDEX_URL other than "auto" wins as it is (empty: pip's configured index). Else the variant's index:
# cpu, PyTorch's CPU wheels (no CUDA libraries); cuda, PyTorch's CUDA 13.0 wheels, the CUDA that PyPI's
# torch 2.13.0 Linux wheel is built for (it requires cuda-toolkit 13.0.3).
set -eu
variant=${1:-cpu}
url=${2-auto}
if [ "$url" != auto ]; then
    printf '%s\n' "$url"
    exit 0
fi
case "$variant" in
    cpu) echo https://download.pytorch.org/whl/cpu ;;
    cuda) echo https://download.pytorch.org/whl/cu130 ;;
    *) echo "TORCH_VARIANT must be cpu or cuda, got '$variant'" >&2; exit 2 ;;
esac
