"""Operators: thin orchestration over hooks and pure rules, mappable across dates or symbols."""

import tempfile
from pathlib import Path

# Where flat files are cached between the download and load tasks. Point the Variable
# ``massive_download_dir`` at a volume shared by all workers in a multi-machine deployment
# (a load task on another worker re-fetches the file when it is not there).
DEFAULT_DOWNLOAD_DIR = str(Path(tempfile.gettempdir()) / "massive-flatfiles")
