# MURA Lens dashboard: a CPU-only image with the shipped model baked in.
#   docker build -t mura-lens .
#   docker run -p 8501:8501 mura-lens
#   docker run -p 8501:8501 -e MURA_ROOT=/data/MURA-v1.1 -v /path/to/MURA-v1.1:/data/MURA-v1.1:ro mura-lens
# MURA's licence forbids redistribution, so the dataset is never copied in: mount it read-only
# and name it with MURA_ROOT. Without it the app shows the shipped results and lets users upload.
FROM python:3.11-slim

# MURA_LENS_LOCK_DATA=1: the data folder is MURA_ROOT, and visitors get no box to name another.
ENV MURA_LENS_LOCK_DATA=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# CPU-only wheels first, at the versions requirements.txt pins (tests/test_deploy.py keeps them
# equal): PyPI's Linux torch pulls gigabytes of CUDA libraries a CPU host never uses. The rest of
# requirements.txt then finds torch and torchvision already satisfied.
COPY requirements.txt ./
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 torchvision==0.29.1 \
 && pip install -r requirements.txt

# An allowlist, so nothing from a developer's checkout (runs/, .venv/, data) reaches the image.
COPY .streamlit/ .streamlit/
COPY core/ core/
COPY dashboard/ dashboard/
COPY pages/ pages/
COPY data_samples/ data_samples/
COPY scripts/ scripts/
COPY weights/ weights/

# The app only reads its files: they stay owned by root, and it runs as an unprivileged user.
RUN useradd --create-home --uid 10001 mura
USER mura

# Set PORT to listen elsewhere: scripts/serve.sh and scripts/healthcheck.py both read it.
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "scripts/healthcheck.py"]
CMD ["sh", "scripts/serve.sh"]
