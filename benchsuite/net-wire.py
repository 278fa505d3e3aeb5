#!/usr/bin/env python3
"""Network transfer next to the wire (issue 17, acceptance 4), in one run.

Every row moves the same bytes (SIZE in all) from tmpfs to tmpfs over
127.0.0.1, as PAIRS interleaved pairs: the plain-TCP reference, then
cryptstream. The figure of a row is the median of the per-pair ratios
cryptstream MB/s / reference MB/s, so a machine that slows down between
two pairs slows both sides of a pair alike.

  row            reference          cryptstream
  1 client  x1   iperf3 -n SIZE     send --connections 1 of one SIZE file
  1 client  x4   iperf3 -n SIZE -P4 send --connections 4 of one SIZE file
  10 clients     iperf3 -n SIZE -P4 10 sends at once, SIZE/10 each
  50 clients     iperf3 -n SIZE -P4 50 sends at once, SIZE/50 each

For each cryptstream run: wall time, the server's CPU seconds (from
/proc/PID/stat before and after) and every client's (wait4), both per GiB
moved, and peak RSS (server VmHWM, the largest client's ru_maxrss). The
server is started anew for each row and its received files are removed
after every run (a second send of a held file sends nothing).

Then scp and rsync (over a throwaway sshd on 127.0.0.1) and `send
--connections 1` and `--connections 4` of the one SIZE file, PAIRS times
in turn, medians.

usage: python3 benchsuite/net-wire.py [OUT_DIR] [--size-mib N] [--pairs N]
       [--scratch DIR] [--bin PATH] [--no-ssh-peers]
Needs iperf3, rsync, openssh-server (installed with apt-get when missing;
only iperf3 with --no-ssh-peers, which leaves scp and rsync out)
and a release build (cargo build --release --locked).
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")
GIB = 1 << 30


def need_tools(ssh_peers):
    wanted = ("iperf3", "rsync", "sshd", "ssh-keygen") if ssh_peers else ("iperf3",)
    missing = [t for t in wanted if shutil.which(t) is None
               and not Path("/usr/sbin/" + t).exists()]
    if missing:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "iperf3", "rsync", "openssh-server",
                        "openssh-client"], check=True, env=env)


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def proc_hwm_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def iperf(size, streams):
    port = free_port()
    server = subprocess.Popen(["iperf3", "-s", "-1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    try:
        out = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-n", str(size),
                              "-P", str(streams), "-J"], capture_output=True, check=True, text=True)
    finally:
        server.wait(timeout=30)
    return json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 8e6


class Server:
    def __init__(self, binary, root, token):
        self.root = root
        self.out = root.parent / "serve.out"
        self.log = open(root.parent / "serve.log", "ab")
        self.proc = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0", "--root", root, "--token-file", token,
             "--create-token", "--max-unauthenticated", "256",
             "--max-unauthenticated-per-address", "256"],
            stdout=open(self.out, "wb"), stderr=self.log)
        for _ in range(100):
            text = self.out.read_text() if self.out.exists() else ""
            if "fingerprint" in text:
                break
            time.sleep(0.05)
        lines = dict(line.split(" ", 1) for line in self.out.read_text().splitlines() if " " in line)
        self.addr = lines["listening"].removeprefix("on ").strip()
        self.fingerprint = lines["fingerprint"].strip()

    def stop(self):
        hwm = proc_hwm_kib(self.proc.pid)
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=30)
        return hwm


def send_all(binary, server, token, files, connections):
    """Starts one send per file at once; returns wall, client CPU, max client RSS."""
    cpu_before = proc_cpu(server.proc.pid)
    start = time.monotonic()
    procs = [subprocess.Popen([binary, "send", f, "--to", server.addr, "--token-file", token,
                               "--server-fingerprint", server.fingerprint,
                               "--connections", str(connections), "--quiet"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for f in files]
    client_cpu, client_rss = 0.0, 0
    for p in procs:
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            raise SystemExit(f"send failed ({p.returncode}): {p.stderr.read().decode()}")
        client_cpu += usage.ru_utime + usage.ru_stime
        client_rss = max(client_rss, usage.ru_maxrss)
    wall = time.monotonic() - start
    server_cpu = proc_cpu(server.proc.pid) - cpu_before
    return wall, server_cpu, client_cpu, client_rss


def same_files(files, root):
    for f in files:
        got = root / Path(f).name
        if not got.exists() or got.stat().st_size != Path(f).stat().st_size:
            return False
        if subprocess.run(["cmp", "-s", f, got]).returncode != 0:
            return False
    return True


def clear(root):
    for entry in root.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def make_files(scratch, size, count):
    folder = scratch / f"src-{count}"
    folder.mkdir()
    each = size // count
    files = []
    for i in range(count):
        path = folder / f"f{i:02}.bin"
        with open(path, "wb") as out:
            left = each
            while left:
                n = min(left, 1 << 20)
                out.write(os.urandom(n))
                left -= n
        files.append(str(path))
    return files


def ssh_setup(work):
    d = work / "ssh"
    d.mkdir(mode=0o700)
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", d / name], check=True)
    shutil.copy(d / "user_key.pub", d / "authorized_keys")
    port = free_port()
    (d / "sshd_config").write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {d}/host_key
AuthorizedKeysFile {d}/authorized_keys
PidFile {d}/sshd.pid
PermitRootLogin yes
PasswordAuthentication no
UsePAM no
StrictModes no
Subsystem sftp /usr/lib/openssh/sftp-server
""")
    Path("/run/sshd").mkdir(exist_ok=True)
    sshd = subprocess.Popen(["/usr/sbin/sshd", "-f", d / "sshd_config", "-D", "-e"],
                            stderr=open(work / "sshd.log", "wb"))
    time.sleep(1)
    opts = ["-i", str(d / "user_key"), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
    return sshd, port, opts


def timed(cmd):
    start = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out", nargs="?", default=str(HERE / "benchsuite/runs" /
                                                    (time.strftime("%Y-%m-%d") + "-net-wire")))
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--scratch", default="/dev/shm")
    parser.add_argument("--bin", default=str(HERE / "target/release/cryptstream"))
    parser.add_argument("--no-ssh-peers", action="store_true",
                        help="leave scp and rsync out (a machine without sshd)")
    args = parser.parse_args()
    need_tools(not args.no_ssh_peers)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    size = args.size_mib << 20
    binary = args.bin
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
    machine = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "kernel": os.uname().release,
        "cpus": os.cpu_count(),
        "load_before": Path("/proc/loadavg").read_text().strip(),
        "scratch": args.scratch,
        "cryptstream": version,
        "size_bytes": size,
        "pairs": args.pairs,
    }
    print(json.dumps(machine, indent=1))
    work = Path(tempfile.mkdtemp(prefix="cst-wire.", dir=args.scratch))
    sshd = None
    try:
        token = work / "token"
        one = make_files(work, size, 1)
        ten = make_files(work, size, 10)
        fifty = make_files(work, size, 50)
        rows = [("1 client, 1 connection", one, 1, 1),
                ("1 client, 4 connections", one, 4, 4),
                ("10 clients", ten, 4, 4),
                ("50 clients", fifty, 4, 4)]
        results = []
        for label, files, connections, streams in rows:
            root = work / "root"
            root.mkdir()
            server = Server(binary, root, token)
            runs = []
            exact = True
            for _ in range(args.pairs):
                reference = iperf(size, streams)
                wall, server_cpu, client_cpu, client_rss = send_all(binary, server, token, files,
                                                                    connections)
                exact = exact and same_files(files, root)
                clear(root)
                mb = size / 1e6 / wall
                runs.append({"iperf_mb_s": reference, "send_mb_s": mb, "ratio": mb / reference,
                             "server_cpu_s_per_gib": server_cpu / (size / GIB),
                             "client_cpu_s_per_gib": client_cpu / (size / GIB),
                             "client_max_rss_kib": client_rss})
                print(f"{label}: iperf3 {reference:.0f} MB/s, send {mb:.0f} MB/s "
                      f"({mb / reference:.2f}), server {server_cpu:.2f} s, clients {client_cpu:.2f} s",
                      flush=True)
            server_hwm = server.stop()
            shutil.rmtree(root)
            med = lambda key: statistics.median(r[key] for r in runs)
            results.append({"row": label, "clients": len(files), "connections": connections,
                            "iperf3_streams": streams, "exact": exact, "runs": runs,
                            "median_ratio": med("ratio"), "median_iperf_mb_s": med("iperf_mb_s"),
                            "median_send_mb_s": med("send_mb_s"),
                            "median_server_cpu_s_per_gib": med("server_cpu_s_per_gib"),
                            "median_client_cpu_s_per_gib": med("client_cpu_s_per_gib"),
                            "server_peak_rss_kib": server_hwm,
                            "client_peak_rss_kib": max(r["client_max_rss_kib"] for r in runs)})

        # scp and rsync next to send, same file, in turn.
        dest = work / "dest"
        dest.mkdir()
        root = work / "root"
        root.mkdir()
        server = Server(binary, root, token)
        src = one[0]
        tools = {}
        if not args.no_ssh_peers:
            sshd, port, opts = ssh_setup(work)
            tools["scp"] = lambda: timed(["scp", "-q", "-P", str(port), *opts, src,
                                          f"root@127.0.0.1:{dest}/scp.bin"])
            tools["rsync"] = lambda: timed(["rsync", "-a", "-e", f"ssh -p {port} {' '.join(opts)}", src,
                                            f"root@127.0.0.1:{dest}/rsync.bin"])
        tools["send --connections 1"] = lambda: send_all(binary, server, token, [src], 1)[0]
        tools["send --connections 4"] = lambda: send_all(binary, server, token, [src], 4)[0]
        times = {name: [] for name in tools}
        for _ in range(args.pairs):
            for name, run in tools.items():
                times[name].append(run())
                clear(dest)
                clear(root)
        server.stop()
        copies = {name: {"median_s": statistics.median(t), "median_mb_s": size / 1e6 / statistics.median(t),
                         "runs_s": t} for name, t in times.items()}
        machine["load_after"] = Path("/proc/loadavg").read_text().strip()
        report = {"machine": machine, "rows": results, "copies": copies}
        (out / "net-wire.json").write_text(json.dumps(report, indent=1))
        lines = [f"{'row':26} {'iperf3 MB/s':>11} {'send MB/s':>9} {'ratio':>6} {'target':>6} "
                 f"{'srv CPU s/GiB':>13} {'cli CPU s/GiB':>13} {'srv/cli':>7} {'srv RSS':>8} "
                 f"{'cli RSS':>8} exact"]
        for r, target in zip(results, (0.70, 0.80, 0.80, 0.80)):
            lines.append(f"{r['row']:26} {r['median_iperf_mb_s']:11.0f} {r['median_send_mb_s']:9.0f} "
                         f"{r['median_ratio']:6.2f} {target:6.2f} "
                         f"{r['median_server_cpu_s_per_gib']:13.2f} {r['median_client_cpu_s_per_gib']:13.2f} "
                         f"{r['median_server_cpu_s_per_gib'] / r['median_client_cpu_s_per_gib']:7.2f} "
                         f"{r['server_peak_rss_kib'] / 1024:7.1f}M {r['client_peak_rss_kib'] / 1024:7.1f}M "
                         f"{'yes' if r['exact'] else 'NO'}")
        lines.append("")
        lines.append(f"{'copy of one file':26} {'median s':>9} {'MB/s':>8}  runs (s)")
        for name, c in copies.items():
            lines.append(f"{name:26} {c['median_s']:9.3f} {c['median_mb_s']:8.0f}  "
                         + " ".join(f"{t:.3f}" for t in c["runs_s"]))
        lines.append("")
        lines.append(f"load before: {machine['load_before']}")
        lines.append(f"load after:  {machine['load_after']}")
        text = "\n".join(lines)
        (out / "net-wire.txt").write_text(text + "\n")
        print(text)
        if not all(r["exact"] for r in results):
            sys.exit("some received file differs")
    finally:
        if sshd:
            sshd.terminate()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
