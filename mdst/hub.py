"""Models from the Hugging Face Hub, the way llama.cpp (`-hf`) and mlx-lm users name them.

    hf://ORG/REPO/FILE.gguf          one file (hf://ORG/REPO@REV/FILE.gguf or FILE.gguf@REV: at a revision)
    ORG/REPO (+ quant="Q4_K_M")      the repo's GGUF model of that quantization (the only one, without quant)

Files go through huggingface_hub (`hf_hub_download`) into its cache, so HF_TOKEN, HF_HOME, HF_ENDPOINT and
HF_HUB_OFFLINE work as for any Hub library; the parts of a split model are downloaded together.
huggingface_hub is imported only when a Hub name is used.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from typing import Callable, Iterator

from .errors import HubError
from .format.gguf import SPLIT_NAME, split_path
from .progress import download_bar

SCHEME = "hf://"
_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
REPO_ID = re.compile(rf"^{_NAME}/{_NAME}$")
# Quantization names as they appear in file names (Q4_K_M, IQ4_XS, Q8_0, UD-Q4_K_XL's Q4_K_XL, BF16, ...).
QUANT_IN_NAME = re.compile(r"(?<![A-Za-z0-9])(I?Q[0-9](?:_[A-Za-z0-9]+)*|TQ[0-9]_[0-9]|MXFP4(?:_MOE)?|BF16|F16|F32)"
                           r"(?![A-Za-z0-9])", re.IGNORECASE)


@dataclass(frozen=True)
class HubRef:
    """A model on the Hub: repository, file in it (None: chosen by quantization) and revision (None: main)."""

    repo: str
    file: str | None
    revision: str | None


def parse(name: str, revision: str | None = None) -> HubRef | None:
    """The Hub reference `name` spells (hf://ORG/REPO[@REV][/FILE][@REV] or ORG/REPO), or None if it is neither;
    ValueError for a malformed hf:// name or two different revisions."""
    if not name.startswith(SCHEME):
        if REPO_ID.match(name) and not name.lower().endswith(".gguf"):
            return HubRef(name, None, revision)
        return None
    org, _, rest = name[len(SCHEME):].partition("/")
    repo, _, file = rest.partition("/")
    revisions = []
    if "@" in repo:
        repo, _, rev = repo.partition("@")
        revisions.append(rev)
    if "@" in file:
        file, _, rev = file.rpartition("@")
        revisions.append(rev)
    if not REPO_ID.match(f"{org}/{repo}") or not all(revisions) or len(revisions) > 1:
        raise ValueError(f"{name!r} is not a Hub model name; write hf://ORG/REPO/FILE.gguf, optionally with @REVISION "
                         "after the repository or the file")
    if revisions and revision is not None and revision != revisions[0]:
        raise ValueError(f"{name!r} names revision {revisions[0]!r} but revision={revision!r} was also given; "
                         "give one")
    return HubRef(f"{org}/{repo}", file or None, revisions[0] if revisions else revision)


def quant_of(path: str) -> str | None:
    """The quantization name in a GGUF file's name (its last one, as written), or None."""
    found = QUANT_IN_NAME.findall(_model_name(os.path.basename(path)))
    return found[-1] if found else None


def _model_name(basename: str) -> str:
    """A file name without its split suffix (-00001-of-00003) and extension."""
    m = SPLIT_NAME.match(basename)
    return m["prefix"] if m else basename.rsplit(".", 1)[0]


def _has_quant(path: str, quant: str) -> bool:
    """Whether `quant` is in the file's path as a whole word: Q4_K_M does not match Q4_K_S, nor Q4_K match Q4_K_M."""
    return re.search(rf"(?<![A-Za-z0-9]){re.escape(quant)}(?![A-Za-z0-9_])", path, re.IGNORECASE) is not None


def model_files(files: list[str]) -> list[str]:
    """The GGUF models among a repository's files: one file each (a split model's first part); vision
    projectors (mmproj) are not language models."""
    models = []
    for f in files:
        base = os.path.basename(f)
        if not base.lower().endswith(".gguf") or base.lower().startswith("mmproj"):
            continue
        split = SPLIT_NAME.match(base)
        if split is None or int(split["no"]) == 1:
            models.append(f)
    return sorted(models)


def pick(files: list[str], quant: str | None, repo: str) -> str:
    """The repository's GGUF model file for `quant` (None: its only model); HubError naming the quantizations
    there when none or several match."""
    models = model_files(files)
    if not models:
        raise HubError(f"{repo} holds no GGUF model file; mdst runs GGUF files (look for a -GGUF repository)")
    matches = [f for f in models if quant is None or _has_quant(f, quant)]
    if len(matches) == 1:
        return matches[0]
    available = ", ".join(dict.fromkeys(quant_of(f) or os.path.basename(f) for f in models))
    if not matches:
        raise HubError(f"{repo} has no {quant} GGUF model; its quantizations: {available}")
    which = f"{len(matches)} GGUF models" + (f" match {quant}" if quant else "")
    raise HubError(f"{repo}: {which} ({', '.join(matches)}); choose one with quant= (--quant) among {available}, "
                   f"or name the file: hf://{repo}/FILE.gguf")


def split_files(file: str, files: list[str] | None = None) -> list[str]:
    """Every part of the model that `file` starts (just `file` unless it is NAME-00001-of-0000N.gguf);
    HubError if the repository's listing `files` lacks one."""
    folder, _, base = file.rpartition("/")   # paths in a repository use "/" on every OS
    m = SPLIT_NAME.match(base)
    if m is None or int(m["no"]) != 1:
        return [file]
    prefix = f"{folder}/{m['prefix']}" if folder else m["prefix"]
    count = int(m["count"])
    parts = [split_path(prefix, i, count) for i in range(count)]
    missing = [p for p in parts if files is not None and p not in files]
    if missing:
        raise HubError(f"{file} is split into {count} files but the repository lacks {', '.join(missing)}")
    return parts


def download(name: str, quant: str | None = None, revision: str | None = None,
             progress: bool | None | Callable[[int, int], None] = None) -> str:
    """The local path of the Hub model `name` (a split model's first part), downloaded with its other parts
    into huggingface_hub's cache unless already there."""
    ref = parse(name, revision)
    if ref is None:
        raise ValueError(f"{name!r} is not a Hub model name (ORG/REPO or hf://ORG/REPO/FILE.gguf)")
    if ref.file is not None and quant is not None:
        raise ValueError(f"{name!r} names a file, so quant={quant!r} has nothing to choose; give one of them")
    if ref.file is None:
        listing, cached = _repo_files(ref)
        try:
            files = split_files(pick(listing, quant, ref.repo), listing)
        except HubError as e:
            if not cached:
                raise
            raise HubError(f"{e} (offline, so only the files in the Hugging Face cache count; download others while "
                           "online: mdst pull)") from None
    else:
        files = split_files(ref.file)
    from huggingface_hub import hf_hub_download

    bar = download_bar(progress)
    paths = []
    for f in files:
        with _hub_errors(ref, f):
            paths.append(hf_hub_download(ref.repo, f, revision=ref.revision, tqdm_class=bar))
    return paths[0]


def _repo_files(ref: HubRef) -> tuple[list[str], bool]:
    """The repository's files at the revision, and whether they come from the cache: listed by the Hub, or by
    the cache when offline (HF_HUB_OFFLINE) or the Hub cannot be reached."""
    from huggingface_hub import HfApi

    try:
        with _hub_errors(ref):
            return HfApi().list_repo_files(ref.repo, revision=ref.revision), False
    except HubError as e:
        cached = _cached_files(ref) if _unreachable(e.__cause__) else None
        if cached is None:
            raise
        return cached, True


def _cached_files(ref: HubRef) -> list[str] | None:
    """The files of the repository's revision that huggingface_hub's cache holds, or None."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    revision = ref.revision or "main"
    try:
        repos = scan_cache_dir().repos
    except CacheNotFound:
        return None
    for repo in repos:
        if repo.repo_id == ref.repo and repo.repo_type == "model":
            for rev in repo.revisions:
                if revision == rev.commit_hash or revision in rev.refs:
                    return sorted(os.path.relpath(f.file_path, rev.snapshot_path).replace(os.sep, "/")
                                  for f in rev.files)
    return None


def _unreachable(e: BaseException | None) -> bool:
    """Whether `e` says the Hub could not be reached: offline mode, or a connection error of huggingface_hub's
    HTTP client (httpx's own types, which it lets through)."""
    from huggingface_hub.errors import OfflineModeIsEnabled

    return isinstance(e, OfflineModeIsEnabled) or type(e).__module__.partition(".")[0] in ("httpx", "httpx2")


@contextlib.contextmanager
def _hub_errors(ref: HubRef, file: str | None = None) -> Iterator[None]:
    """huggingface_hub's failures as HubError (caused by the original), saying what to do."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError)

    at = f" at revision {ref.revision}" if ref.revision else ""
    what = f"{ref.repo}/{file}" if file else ref.repo
    try:
        yield
    except GatedRepoError as e:
        raise HubError(f"{ref.repo} is gated: accept its terms on the Hub and log in (HF_TOKEN or `hf auth login`)") \
            from e
    except RevisionNotFoundError as e:
        raise HubError(f"{ref.repo} has no revision {ref.revision!r}; give a branch, tag or commit it has") from e
    except RepositoryNotFoundError as e:
        raise HubError(f"no model repository {ref.repo} on {constants.ENDPOINT} (or it is private: log in with "
                       "HF_TOKEN or `hf auth login`), and no such local file; check the name") from e
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
        raise HubError(f"{what}{at} is not in the Hugging Face cache and the Hub cannot be used (offline mode, "
                       "HF_HUB_OFFLINE=1, or no connection); download it first while online (`mdst pull`)") from e
    except EntryNotFoundError as e:   # after LocalEntryNotFoundError, its subclass
        raise HubError(f"{ref.repo} has no file {file}{at}; `mdst pull {ref.repo}` lists its quantizations") from e
    except HfHubHTTPError as e:
        raise HubError(f"the Hub refused {what}{at}: {e}") from e
    except Exception as e:
        if not _unreachable(e):
            raise
        raise HubError(f"cannot reach the Hub ({constants.ENDPOINT}) for {what}{at}: {e}; check the connection, or "
                       "set HF_HUB_OFFLINE=1 to use what the cache holds") from e
