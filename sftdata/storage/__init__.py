"""Output locations: names (``layout``), local atomic writes (``atomic``), URIs (``uri``), and the
``Folder`` interface over a local folder or a pyarrow filesystem (``folder``)."""

from sftdata.storage.folder import Folder, LocalFolder, RemoteFolder, staging_for, work_dir
from sftdata.storage.uri import display, filesystem, is_uri, local_path_of, split_uri

__all__ = ["Folder", "LocalFolder", "RemoteFolder", "staging_for", "work_dir", "display", "filesystem", "is_uri",
           "local_path_of", "split_uri"]
