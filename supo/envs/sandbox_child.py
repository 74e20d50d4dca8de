"""The sandbox's child program (``supo.envs.sandbox``): the source the sandbox runs as ``python -I -c CHILD_SOURCE
<limits json>`` — resource limits, no network, no subprocesses, a stand-in ``gymnasium``, and a JSON-lines protocol
on private copies of its stdin and stdout. It is a string: it runs in an isolated interpreter, never imported.
"""


CHILD_SOURCE = r'''
import sys, os, json, resource

LIM = json.loads(sys.argv[1])

def _limits():
    mem = int(LIM["memory_mb"]) << 20
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    fs = int(LIM["file_mb"]) << 20
    resource.setrlimit(resource.RLIMIT_FSIZE, (fs, fs))
    cpu = int(LIM["cpu_seconds"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    try:
        resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    except (ValueError, OSError):
        pass

_limits()

# The protocol uses private copies of fds 0 and 1; the untrusted code's stdin is /dev/null and its stdout goes to
# stderr (a capped file the parent reads only for crash messages).
_pin = os.fdopen(os.dup(0), "rb")
_pout = os.fdopen(os.dup(1), "wb", buffering=0)
_null = os.open(os.devnull, os.O_RDONLY)
os.dup2(_null, 0)
os.dup2(2, 1)

import ast, builtins, types, io, traceback, math, subprocess, socket, _socket

def _deny_net(*a, **k):
    raise PermissionError("network access is disabled in the sandbox")

class _NoSocket(socket.socket):
    def __init__(self, *a, **k):
        _deny_net()

socket.socket = socket.SocketType = _NoSocket
_socket.socket = _socket.SocketType = _NoSocket
for _n in ("create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo", "gethostbyname",
           "gethostbyname_ex", "gethostbyaddr", "getnameinfo"):
    if hasattr(socket, _n):
        setattr(socket, _n, _deny_net)
    if hasattr(_socket, _n):
        setattr(_socket, _n, _deny_net)

def _deny_proc(*a, **k):
    raise PermissionError("starting processes is disabled in the sandbox")

for _n in ("system", "popen", "fork", "forkpty", "posix_spawn", "posix_spawnp", "execv", "execve", "execl",
           "execle", "execlp", "execlpe", "execvp", "execvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv",
           "spawnve", "spawnvp", "spawnvpe", "kill", "killpg"):
    if hasattr(os, _n):
        setattr(os, _n, _deny_proc)

class _NoPopen:
    def __init__(self, *a, **k):
        _deny_proc()

subprocess.Popen = _NoPopen
try:
    import _posixsubprocess
    _posixsubprocess.fork_exec = _deny_proc
except ImportError:
    pass

# A stand-in gymnasium: CodeGym classes subclass gymnasium.Env and use nothing else of it.
_gym = types.ModuleType("gymnasium")
class Env:
    metadata = {"render_modes": []}
    render_mode = None
    spec = None
    def __init__(self, *a, **k):
        pass
    def reset(self, *, seed=None, options=None):
        return None
    def step(self, action):
        raise NotImplementedError
    def render(self):
        return None
    def close(self):
        pass
_gym.Env = Env
_spaces = types.ModuleType("gymnasium.spaces")
class Space:
    def __init__(self, *a, **k):
        self.args, self.kwargs = a, k
    def contains(self, x):
        return True
_spaces.Space = Space
for _n in ("Discrete", "Box", "Text", "Dict", "Tuple", "MultiDiscrete", "MultiBinary", "Sequence"):
    setattr(_spaces, _n, type(_n, (Space,), {}))
_gym.spaces = _spaces
sys.modules["gymnasium"] = _gym
sys.modules["gymnasium.spaces"] = _spaces
sys.modules.setdefault("gym", _gym)

MAX_OBS = int(LIM["max_obs_chars"])
MEM_BYTES = int(LIM["memory_mb"]) << 20
MEM_FRACTION = float(LIM["mem_fraction"])

def _send(obj):
    try:
        data = json.dumps(obj)
    except (TypeError, ValueError):
        data = json.dumps({"ok": False, "error": "unserialisable response"})
    _pout.write(data.encode("utf-8", "replace") + b"\n")

def _peak_bytes():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0

def _state(env):
    try:
        finished = bool(getattr(env, "finished", False))
    except Exception:
        finished = False
    try:
        reward = float(getattr(env, "reward", 0.0))
        if not math.isfinite(reward):
            reward = 0.0
    except Exception:
        reward = 0.0
    return finished, reward

def _obs_of(res):
    if isinstance(res, (tuple, list)) and len(res) == 2:
        res = res[1]
    return str(res)[:MAX_OBS]

def _build(code, env_name, env_str):
    mod = types.ModuleType("codegym_env")
    mod.__dict__["__builtins__"] = builtins
    sys.modules["codegym_env"] = mod
    exec(compile(code, "<codegym_env>", "exec"), mod.__dict__)
    cls = getattr(mod, env_name, None)
    if cls is None:
        raise LookupError("the environment code defines no class %r" % env_name)
    maker = getattr(cls, "from_env_str", None)
    env = maker(env_str) if maker is not None else cls(env_str=env_str)
    if env is None:
        raise ValueError("%s.from_env_str(%r) returned None" % (env_name, env_str[:80]))
    return env

ENV = None
SPEC = None

def handle(req):
    global ENV, SPEC
    op = req.get("op")
    if op == "init":
        SPEC = (req["code"], req["env_name"], req["env_str"])
        ENV = _build(*SPEC)
        tools = getattr(ENV, "func_mapping", None)
        finished, reward = _state(ENV)
        return {"ok": True, "obs": "ready", "finished": finished, "reward": reward,
                "tools": sorted(map(str, tools)) if isinstance(tools, dict) else None}
    if op == "step":
        try:
            res = ENV.step(req["action"])
        except MemoryError:
            raise
        except Exception as e:
            return {"ok": False, "error": "%s: %s" % (e.__class__.__name__, str(e)[:200])}
        finished, reward = _state(ENV)
        count = getattr(ENV, "step_count", None)
        return {"ok": True, "obs": _obs_of(res), "finished": finished, "reward": reward,
                "step_count": count if isinstance(count, int) else None}
    if op == "oracle":
        env = _build(*SPEC)
        actions = []
        orig = env.step
        def recording_step(action):
            actions.append(action if isinstance(action, str) else json.dumps(action))
            return orig(action)
        env.step = recording_step
        out = env.solve()
        finished, reward = _state(env)
        return {"ok": True, "actions": actions, "obs": str(out)[:MAX_OBS], "finished": finished, "reward": reward}
    return {"ok": False, "error": "unknown op %r" % (op,)}

def main():
    while True:
        line = _pin.readline()
        if not line:
            return
        try:
            req = json.loads(line)
            resp = handle(req)
        except MemoryError:
            _send({"fatal": "memory", "error": "MemoryError"})
            return
        except SystemExit:
            _send({"fatal": "crash", "error": "the environment called exit()"})
            return
        except BaseException as e:
            resp = {"ok": False, "error": "%s: %s" % (e.__class__.__name__, str(e)[:300])}
            if req_op_is_init(line):
                _send({"fatal": "start", "error": resp["error"], "trace": traceback.format_exc()[-1500:]})
                return
        peak = _peak_bytes()
        if peak and peak >= MEM_FRACTION * MEM_BYTES:
            _send({"fatal": "memory", "error": "peak resident memory %d MB reached the limit of %d MB"
                   % (peak >> 20, MEM_BYTES >> 20)})
            return
        _send(resp)

def req_op_is_init(line):
    try:
        return json.loads(line).get("op") == "init"
    except Exception:
        return False

main()
'''
