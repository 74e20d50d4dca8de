"""The files task family (:mod:`supo.synth.families`): a small directory tree with a current directory
(BFCL-like: pwd, ls, cd, cat, wc, mkdir, cp)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from supo.synth.api_graph import Param, Tool
from supo.synth.family_base import Backend, Family, ToolFailure, _NAME_RE, _pick

FOLDERS = ("docs", "work", "music", "photos", "old", "tmp", "logs", "misc", "alpha", "beta", "drafts", "backup")
FILES = ("notes.txt", "todo.txt", "plan.txt", "data.csv", "log.txt", "list.txt")
MAX_ENTRIES = 3  # subfolders (and, separately, files) per folder: keeps a listing short
WORDS = ("red", "blue", "green", "apple", "river", "stone", "light", "fast", "quiet", "north", "seven", "paper")
ROOT = "/home"


class FilesBackend(Backend):
    def _dir(self) -> dict[str, Any]:
        return self.state["dirs"][self.state["cwd"]]

    def t_pwd(self) -> str:
        return self.state["cwd"]

    def t_ls(self) -> str:
        d = self._dir()
        entries = [f"{x}/" for x in sorted(d["dirs"])] + sorted(d["files"])
        return " ".join(entries) if entries else "empty"

    def t_cd(self, folder: str) -> str:
        cwd = self.state["cwd"]
        if folder in self._dir()["dirs"]:
            self.state["cwd"] = f"{cwd}/{folder}"
        elif folder == "..":
            if cwd == ROOT:
                raise ToolFailure(f"already at the top folder {ROOT}")
            self.state["cwd"] = cwd.rsplit("/", 1)[0]
        elif folder != cwd.rsplit("/", 1)[1]:  # cd into the folder you are in: stay
            raise ToolFailure(f"no folder {folder[:40]!r} in {cwd}")
        return self.state["cwd"]

    def _file(self, file: str) -> str:
        files = self._dir()["files"]
        if file not in files:
            raise ToolFailure(f"no file {file[:40]!r} in {self.state['cwd']}")
        return files[file]

    def t_cat(self, file: str) -> str:
        return self._file(file)

    def t_wc(self, file: str) -> str:
        return str(len(self._file(file).split()))

    def t_mkdir(self, folder: str) -> str:
        if not _NAME_RE.match(folder):
            raise ToolFailure(f"bad folder name {folder[:40]!r}: use lowercase letters, digits, _")
        d, cwd = self._dir(), self.state["cwd"]
        if folder in d["files"]:
            raise ToolFailure(f"{folder} is a file")
        if folder not in d["dirs"]:
            d["dirs"].append(folder)
            d["dirs"].sort()
            self.state["dirs"][f"{cwd}/{folder}"] = {"dirs": [], "files": {}}
        return f"{cwd}/{folder}"

    def t_cp(self, file: str, folder: str) -> str:
        content = self._file(file)
        cwd = self.state["cwd"]
        if folder not in self._dir()["dirs"]:
            raise ToolFailure(f"no folder {folder[:40]!r} in {cwd}")
        self.state["dirs"][f"{cwd}/{folder}"]["files"][file] = content
        return f"{cwd}/{folder}/{file}"

    def verified(self) -> Any:
        return self.state["dirs"]


@dataclass
class FilesFamily(Family):
    name: str = "files"
    tools: tuple[Tool, ...] = (
        Tool("pwd", "the current folder", (), "path"),
        Tool("ls", "entries of the current folder", (), "entries", ("pwd",)),
        Tool("cd", "enter a subfolder", (Param("folder", str),), "path", ("ls",)),
        Tool("cat", "text of a file here", (Param("file", str),), "text", ("ls",)),
        Tool("wc", "word count of a file here", (Param("file", str),), "words", ("cat",)),
        Tool("mkdir", "make a subfolder here", (Param("folder", str),), "path", ("ls",), effect=True),
        Tool("cp", "copy a file here into a subfolder", (Param("file", str), Param("folder", str)), "path",
             ("mkdir",), effect=True),
    )
    goal_tools: tuple[str, ...] = ("cd", "mkdir", "cp")
    final_tools: tuple[str, ...] = ("cat", "wc", "mkdir", "cp")
    goal_templates: dict[str, tuple[str, ...]] = field(default_factory=lambda: {
        "pwd": ("tell me which folder we are in", "show the current location"),
        "ls": ("list what this folder holds", "show me the contents of this folder"),
        "cd": ("go into the {folder} folder", "open the folder {folder}", "move into {folder}"),
        "cat": ("show me what {file} says", "read {file} to me", "print the text of {file}"),
        "wc": ("count the words in {file}", "tell me how many words {file} has"),
        "mkdir": ("create a folder named {folder}", "make a new directory called {folder}",
                  "set up an empty folder {folder}"),
        "cp": ("copy {file} into the {folder} folder", "put a copy of {file} in {folder}",
               "back up {file} into a folder named {folder}"),
    })
    follow_templates: dict[str, tuple[str, ...]] = field(default_factory=lambda: {
        "pwd": ("tell me which folder we are in",),
        "ls": ("list what this folder holds",),
        "cd": ("go into {folder}",),
        "cat": ("show me what {file} says",),
        "wc": ("count the words in {file}",),
        "mkdir": ("create a folder named {folder}",),
        "cp": ("put a copy of {file} in {folder}",),
    })
    distractors: tuple[str, ...] = ("I wrote {file} last week.", "My old {folder} folder is gone.",
                                    "Someone renamed {file} once.")
    backend_cls: type[Backend] = FilesBackend

    def make_state(self, rng: random.Random) -> dict[str, Any]:
        names = _pick(rng, FOLDERS, rng.randint(4, 6))
        dirs: dict[str, Any] = {ROOT: {"dirs": [], "files": {}}}
        paths = [ROOT]
        for n in names:
            parent = rng.choice([p for p in paths if p.count("/") <= 2 and len(dirs[p]["dirs"]) < 2])
            dirs[parent]["dirs"].append(n)
            dirs[parent]["dirs"].sort()
            dirs[f"{parent}/{n}"] = {"dirs": [], "files": {}}
            paths.append(f"{parent}/{n}")
        for p in paths:
            for f in _pick(rng, FILES, rng.randint(1 if p == ROOT else 0, 2)):
                dirs[p]["files"][f] = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 4)))
        return {"dirs": dirs, "cwd": ROOT}

    def _new_folder(self, backend: Backend, rng: random.Random) -> str | None:
        used = {p.rsplit("/", 1)[1] for p in backend.state["dirs"]}
        return _pick(rng, [f for f in FOLDERS if f not in used])

    def sample_goal(self, tool, backend, rng):
        here = backend.state["dirs"][backend.state["cwd"]]
        if tool in ("pwd", "ls"):
            return {}
        if tool == "cd":
            return {"folder": _pick(rng, here["dirs"])} if here["dirs"] else None
        if tool in ("cat", "wc"):
            return {"file": _pick(rng, here["files"])} if here["files"] else None
        if tool == "mkdir":
            new = self._new_folder(backend, rng) if len(here["dirs"]) < MAX_ENTRIES else None
            return {"folder": new} if new else None
        if tool == "cp":
            if not here["files"]:
                return None
            if here["dirs"] and (rng.random() < 0.5 or len(here["dirs"]) >= MAX_ENTRIES):
                folder = _pick(rng, here["dirs"])
            else:
                folder = self._new_folder(backend, rng)
            file = _pick(rng, here["files"])
            if folder is None or self._full(backend, folder, file):
                return None
            return {"file": file, "folder": folder}
        raise ValueError(tool)

    def sample_follow(self, tool, backend, ctx, rng):
        here = backend.state["dirs"][backend.state["cwd"]]
        if tool == "cp":  # the folder must exist already (mkdir ran for another folder)
            if not here["files"] or not here["dirs"]:
                return None
            file, folder = _pick(rng, here["files"]), _pick(rng, here["dirs"])
            return None if self._full(backend, folder, file) else {"file": file, "folder": folder}
        return self.sample_goal(tool, backend, rng)

    @staticmethod
    def _full(backend: Backend, folder: str, file: str) -> bool:
        """True when copying ``file`` into ``folder`` would leave it with more than MAX_ENTRIES files."""
        there = backend.state["dirs"].get(f"{backend.state['cwd']}/{folder}", {"files": {}})["files"]
        return file not in there and len(there) >= MAX_ENTRIES

    def entities(self, state):
        return {"file": list(FILES), "folder": list(FOLDERS)}
