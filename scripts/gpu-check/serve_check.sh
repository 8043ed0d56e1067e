#!/bin/bash
# usage: serve_check.sh PYTHON OUTDIR   (run from the repo root)
PY=$1; O=$2; mkdir -p "$O"
export LLMUX_HOME=$(mktemp -d) LLMUX_BUNDLED_MODEL='' LLMUX_HOST=127.0.0.1:11500
$PY - <<'EOF'
import os
from pathlib import Path
from llmux.core.names import ModelName
from llmux.models.store import ModelStore
home = Path(os.environ["LLMUX_HOME"])
print(ModelStore(home / "models").import_gguf(ModelName.parse("tiny:test"), Path(".gpucheck/tiny.gguf")))
EOF
$PY -m llmux serve --log-level debug > "$O/server.log" 2>&1 &
SP=$!
for i in $(seq 60); do curl -s localhost:11500/api/version >/dev/null && break; sleep 0.5; done
U=http://127.0.0.1:11500
{
echo "== generate num_gpu -1"
curl -s $U/api/generate -d '{"model":"tiny:test","prompt":"Hello, how are you?","stream":false,"options":{"num_gpu":-1,"num_predict":32,"temperature":0}}'; echo
echo "== nvidia-smi after load (server pid $SP)"
nvidia-smi --query-compute-apps=pid,used_memory --format=csv 2>&1
echo "== api/ps"
curl -s $U/api/ps; echo
echo "== chat completions json_object"
curl -s $U/v1/chat/completions -H 'content-type: application/json' -d '{"model":"tiny:test","messages":[{"role":"user","content":"Give me JSON"}],"max_tokens":16,"response_format":{"type":"json_object"}}'; echo
echo "== embed"
curl -s $U/api/embed -d '{"model":"tiny:test","input":["hello world","second text"]}' | head -c 400; echo
echo "== nvidia-smi after embed"
nvidia-smi --query-compute-apps=pid,used_memory --format=csv 2>&1
for g in -1 0 -1 0; do
  echo "== generate num_gpu $g num_predict 256 $(date +%T.%N) alive=$(kill -0 $SP 2>&1 && echo y)"
  curl -s $U/api/generate -d "{\"model\":\"tiny:test\",\"prompt\":\"Once upon a time\",\"stream\":false,\"options\":{\"num_gpu\":$g,\"num_predict\":256,\"temperature\":0}}" \
    | $PY -c 'import json,sys; d=json.load(sys.stdin); print({k:v for k,v in d.items() if k!="context" and k!="response"}); print("eval tok/s %.1f  prompt tok/s %.1f" % (d["eval_count"]/d["eval_duration"]*1e9, d["prompt_eval_count"]/max(d["prompt_eval_duration"],1)*1e9))'
  nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader 2>&1
done
echo "== api/ps"
curl -s $U/api/ps; echo
} > "$O/endpoints.txt" 2>&1
echo "killing at $(date +%T.%N)" >> "$O/endpoints.txt"; kill $SP; sleep 1
grep -i -E "cuda|offload|gpu|error|Traceback" "$O/server.log" | head -40 > "$O/server_grep.txt"
echo done
