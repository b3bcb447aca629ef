"""sluice_proc.py — ports no other process can take, and `sluice` processes
started on them, for the Python and shell tests.

The race it removes: picking a free port (bind port 0, read it, close the
socket) and starting a server on it later leaves a window in which another
process can take the port: a parallel test's server that picked the same
number, or any client's connect(). The worker configs cannot ask for "any
port" (port 0 means disabled), so the tests reserve instead:
reserve_ports() binds sockets to 127.0.0.1:0 with SO_REUSEADDR and
SO_REUSEPORT and keeps them open without listening. While a reservation is
held the kernel gives its port to no other bind(0) and no connect(), and
it refuses a plain bind; Sluice's listeners (SO_REUSEADDR, and SO_REUSEPORT
for RESP and gRPC) can still bind it, and a socket that does not listen
takes no connections. Hold the reservation for the life of the process,
restarts on the same ports included, and close it at the end.

start() runs a sluice command with --ports-file (docs/operations.md) and
waits for that file: the command listens on every port it names.

As a program, for the shell tests (tests/cmd/testlib.sh):
    python3 sluice_proc.py hold N FILE
reserves N ports, writes them to FILE (one per line, atomically) and holds
them until killed or until its parent exits; and for a broker that is
crashed and resumed on its ports (tests/kafka/kafka-broker.sh):
    python3 sluice_proc.py hold-ports PIDFILE PORT...
holds those ports, writes its pid to PIDFILE once it holds them, and exits
on SIGTERM (or after 15 minutes, should nobody resume the broker).
"""
import os
import signal
import socket
import subprocess
import sys
import time


class PortReservation:
    """n reserved ports on 127.0.0.1 (.ports), held until close()."""

    def __init__(self, n, ports=None):
        """n ports the kernel picks, or the given ports (OSError if one is taken)."""
        self._socks = []
        for i in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(("127.0.0.1", ports[i] if ports else 0))
        self.ports = [s.getsockname()[1] for s in self._socks]

    def close(self):
        for s in self._socks:
            s.close()
        self._socks = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def reserve_ports(n):
    return PortReservation(n)


def read_ports_file(path):
    """{name: port} of a ports file ("NAME BIND PORT" lines)."""
    out = {}
    with open(path) as f:
        for line in f:
            name, _bind, port = line.split()
            out[name] = int(port)
    return out


def wait_ports_file(path, proc, timeout=120, log=None):
    """Waits until `proc` wrote its ports file; returns {name: port}. Raises
    RuntimeError if the process exits first or nothing comes within timeout
    seconds (generous: a loaded machine under ASan starts slowly)."""
    deadline = time.time() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise RuntimeError("%s exited (%d) before listening%s" % (proc.args[:2], proc.returncode, _tail(log)))
        if time.time() > deadline:
            raise RuntimeError("%s wrote no ports file within %d s%s" % (proc.args[:2], timeout, _tail(log)))
        time.sleep(0.05)
    return read_ports_file(path)


def start(argv, ports_file, want=None, timeout=120, log=None, **popen_kw):
    """Starts argv (a sluice serve|run|ingest command line) with
    --ports-file ports_file and waits until it listens. want: {name: port}
    the listeners must have (checked). log: the path its stderr goes to, for
    error messages. Returns (Popen, {name: port})."""
    if os.path.exists(ports_file):
        os.remove(ports_file)
    proc = subprocess.Popen(list(argv) + ["--ports-file", ports_file], **popen_kw)
    try:
        ports = wait_ports_file(ports_file, proc, timeout, log)
        for name, port in (want or {}).items():
            if ports.get(name) != port:
                raise RuntimeError("%s listens on %r, asked for %s %d" % (argv[:2], ports, name, port))
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    return proc, ports


def _tail(log):
    if not log or not os.path.exists(log):
        return ""
    with open(log, errors="replace") as f:
        return ":\n" + f.read()[-3000:]


def _hold(n, path):
    """The shell tests' reservation: writes the ports to path and holds them
    until SIGTERM, or until its parent (the test script) is gone."""
    parent = os.getppid()
    r = reserve_ports(n)
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write("".join("%d\n" % p for p in r.ports))
    os.replace(tmp, path)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while os.getppid() == parent:
        time.sleep(0.5)
    r.close()


def _hold_ports(pidfile, ports):
    """Holds the given ports until SIGTERM (at most 15 minutes)."""
    r = PortReservation(len(ports), ports)
    tmp = "%s.tmp.%d" % (pidfile, os.getpid())
    with open(tmp, "w") as f:
        f.write("%d\n" % os.getpid())
    os.replace(tmp, pidfile)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    time.sleep(900)
    r.close()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "hold":
        _hold(int(sys.argv[2]), sys.argv[3])
    elif len(sys.argv) >= 4 and sys.argv[1] == "hold-ports":
        _hold_ports(sys.argv[2], [int(p) for p in sys.argv[3:]])
    else:
        sys.exit("usage: sluice_proc.py hold N FILE | hold-ports PIDFILE PORT...")
