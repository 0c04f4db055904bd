FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir ".[weights]"
ENTRYPOINT []
