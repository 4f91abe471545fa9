#!/bin/sh
# The one command line that serves the dashboard in production. The Dockerfile, the Procfile
# and tests/test_deploy.py all run this file, so what is tested is what is deployed.
#   PORT                      port to listen on (Heroku-style platforms set it; default 8501)
#   STREAMLIT_SERVER_ADDRESS  interface to bind (default 0.0.0.0: reachable from outside a container)
#   MURA_LENS_LOCK_DATA       1 (default here): the data folder is MURA_ROOT and visitors get no folder box;
#                             0 lets whoever opens the page point the app at any folder of the server
set -eu
export MURA_LENS_LOCK_DATA="${MURA_LENS_LOCK_DATA:-1}"
# Streamlit reads .streamlit/config.toml from the working directory: run from the repository root.
cd "$(dirname "$0")/.."
# core/ and dashboard/ import from the checkout itself; platforms that only install
# requirements.txt (Heroku-style buildpacks) never install this package.
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
# No file watcher in production: nothing edits the code, and watching costs CPU and inotify handles.
exec python -m streamlit run dashboard/app.py \
  --server.address "${STREAMLIT_SERVER_ADDRESS:-0.0.0.0}" \
  --server.port "${PORT:-8501}" \
  --server.headless true \
  --server.fileWatcherType none
