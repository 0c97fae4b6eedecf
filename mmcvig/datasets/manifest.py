"""The manifest a toy data generator leaves beside what it wrote: which data set a folder
holds, so a second run with the same arguments writes nothing and other arguments never
overwrite a different set unasked."""
import json
import os
import os.path as osp
import shutil
from typing import Callable, Optional, Sequence

MANIFEST = 'manifest.json'


def read_manifest(out_dir: str) -> Optional[dict]:
    """The manifest in ``out_dir``, or None."""
    path = osp.join(out_dir, MANIFEST)
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_manifest(out_dir: str, manifest: dict):
    """Written last: a manifest vouches for a complete data set."""
    with open(osp.join(out_dir, MANIFEST), 'w') as f:
        json.dump(manifest, f, indent=1)


def holds_data_set(out_dir: str, manifest: dict, is_complete: Callable[[], bool],
                   owned: Sequence[str], force: bool) -> bool:
    """True when ``out_dir`` already holds the data set ``manifest`` describes, complete;
    raises when it holds something else, unless ``force``, which removes the generator's
    own paths ``owned`` (and nothing else).

    Raises:
        FileExistsError: ``out_dir`` holds other files and ``force`` is not set.
    """
    if not osp.isdir(out_dir) or not os.listdir(out_dir):
        return False
    found = read_manifest(out_dir)
    if found == manifest and is_complete():
        return True
    if not force:
        if found is None:
            why = f'has no {MANIFEST} (not made by this tool, or an interrupted run)'
        elif found == manifest:
            why = 'holds this toy data set with files missing'
        else:
            diff = {k: (found.get(k), v) for k, v in manifest.items() if found.get(k) != v}
            why = f'holds another toy data set (found -> wanted: {diff})'
        raise FileExistsError(f'{out_dir} {why}. Pass --force to replace it, or choose '
                              'another --out.')
    for path in owned:
        if osp.isdir(path):
            shutil.rmtree(path)
        elif osp.exists(path):
            os.remove(path)
    return False


def write_once(out_dir: str, manifest: dict, is_complete: Callable[[], bool],
               owned: Sequence[str], write: Callable[[], None], force: bool) -> bool:
    """``write()`` the data set ``manifest`` describes into ``out_dir``, then the
    manifest; False, writing nothing, when ``out_dir`` already holds it
    (:func:`holds_data_set`, which also says what ``owned`` and ``force`` do)."""
    if holds_data_set(out_dir, manifest, is_complete, owned, force):
        return False
    write()
    write_manifest(out_dir, manifest)
    return True
