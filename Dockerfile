# winnow on a GPU host: official vLLM (CUDA) + winnow. Not buildable on our CI machines (no Docker
# engine, no GPU); kept deliberately simple. Build: docker build -t winnow .
# Run:   docker run --gpus all -p 8000:8000 -v winnow-data:/data winnow --model /models/my-model
FROM vllm/vllm-openai:latest

WORKDIR /opt/winnow
COPY pyproject.toml README.md ./
COPY winnow ./winnow
# vllm is already in the base image; install winnow and its light dependencies next to it.
RUN python3 -m pip install --no-cache-dir -e '.[gpu]'

ENV WINNOW_DATA_DIR=/data HF_HUB_OFFLINE=1
VOLUME ["/data"]
EXPOSE 8000
# With no --model, the embedded default (SmolLM2-135M) is built on first start into /data.
ENTRYPOINT ["winnow", "serve", "--host", "0.0.0.0", "--port", "8000", "--data-dir", "/data"]
