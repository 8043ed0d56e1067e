#!/bin/bash
# Run on the GPU machine from the repo root.
set -x
O=${OUT:-/tmp/out}; mkdir -p "$O"
exec > >(tee "$O/build.txt") 2>&1
nvidia-smi; nvcc --version | tail -2; cmake --version | head -1
V=/tmp/gvenv
[ -x $V/bin/python ] || /opt/torch/.venv/bin/python3 -m venv --system-site-packages $V
$V/bin/pip --version
TS=$(/opt/torch/.venv/bin/python3 -c 'import sysconfig;print(sysconfig.get_paths()["purelib"])')
echo "$TS" > $V/lib/python3.12/site-packages/zz_torchvenv.pth
/opt/torch/.venv/bin/python3 -c 'import scikit_build_core; print(scikit_build_core.__version__, scikit_build_core.__file__)'
$V/bin/python -c 'import scikit_build_core' || find / -maxdepth 7 -name 'scikit_build_core' -type d 2>/dev/null | head -3
which cmake ninja nvcc
$V/bin/pip install --no-index --find-links .gpucheck/wheels fastapi starlette pydantic pydantic-core \
  pydantic-settings uvicorn h11 annotated-types typing-inspection python-dotenv diskcache setuptools wheel || exit 1
$V/bin/python -c "import scikit_build_core, typer, rich, httpx, jinja2, numpy; print('deps ok')"
T0=$(date +%s)
$V/bin/python -c 'import llama_cpp' 2>/dev/null || CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=off" CMAKE_BUILD_PARALLEL_LEVEL=16 \
  timeout ${BUILD_TIMEOUT:-500} $V/bin/pip install --config-settings=build-dir=/tmp/skbuild --no-index --no-build-isolation --find-links .gpucheck/wheels \
  .gpucheck/sdist2/llama_cpp_python-0.3.36.tar.gz 2>&1 | tail -15
T1=$(date +%s); echo "BUILD_SECONDS=$((T1-T0))"
$V/bin/python -c "import llama_cpp" || { echo LLAMA_CPP_MISSING; exit 3; }
$V/bin/pip install --no-deps --no-build-isolation -e . 2>&1 | tail -3
$V/bin/python -c "
import llama_cpp, llmux
print('llama_cpp', llama_cpp.__version__, 'gpu_offload', llama_cpp.llama_supports_gpu_offload())
print(llama_cpp.llama_print_system_info().decode())
"
ls $($V/bin/python -c "import llama_cpp,os;print(os.path.dirname(llama_cpp.__file__))")/lib
# verbose direct load to see offload lines
$V/bin/python -c "
from llama_cpp import Llama
l = Llama('.gpucheck/tiny.gguf', n_gpu_layers=-1, n_ctx=512, verbose=True)
print(repr(l('Hello', max_tokens=8)['choices'][0]['text']))
" > "$O/direct_verbose.txt" 2>&1
grep -i -E "offload|CUDA|device|buffer" "$O/direct_verbose.txt" | head -30
bash scripts/gpu-check/serve_check.sh $V/bin/python "$O"
