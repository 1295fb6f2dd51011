#!/usr/bin/env python3
"""Runs QEMU 7.2's Python block-job iotests (030 stream, 040 commit, 041 mirror,
056 backup) against ferrovm, or against QEMU itself as the reference.

`make iotests` calls this; docs/iotests.md describes the variables and output.

The tests come from Debian bookworm's `qemu` source package, fetched at test
time into build/qemu-src by fetch.sh; nothing of QEMU's is in this repository.

Why not QEMU's `./check`: it does read QEMU_PROG and friends from the
environment, but (1) it aborts before running anything when
`QEMU_PROG -machine help` fails (testenv.get_default_machine uses check=True)
and when qemu-storage-daemon is missing, so an emulator without that probe
gives a traceback instead of a table; (2) it judges a test by diffing its
output against NNN.out, which says nothing about which cases failed and
cannot run a chosen subset of cases; (3) it has no timeout and does not kill
the emulators a hung test leaves behind. So this script sets the same
environment testenv.py sets (iotenv.env_for) and runs each test file
itself through case_runner.py, which records every case's outcome as JSON.
"""

import argparse
import collections
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from iotenv import default_machine, env_for, fallback_accel, probe
from report import collect, first_line, print_table, shown

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DEFAULT_TESTS = ['030', '040', '041', '056']


class HarnessError(Exception):
    """The harness itself could not run: no source, no emulator, no tools."""


def fetch_source(cache):
    """Path of the extracted QEMU 7.2 source tree (fetch.sh fetches it once)."""
    r = subprocess.run([os.path.join(HERE, 'fetch.sh'), cache],
                       stdout=subprocess.PIPE, universal_newlines=True)
    src = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ''
    if r.returncode != 0 or not os.path.isdir(src):
        raise HarnessError(f'could not fetch QEMU 7.2 iotests into {cache} '
                           f'(fetch.sh exit {r.returncode})')
    return src


def executable(path, what):
    p = shutil.which(path) if os.sep not in path else path
    if not p or not os.path.isfile(p) or not os.access(p, os.X_OK):
        raise HarnessError(f'{what} not found or not executable: {path}')
    return os.path.abspath(p)


def kill_leftovers(markers):
    """SIGKILLs every process whose command line names one of our directories
    (an emulator that left the test's process group)."""
    killed = []
    for pid in os.listdir('/proc'):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                cmd = f.read().decode(errors='replace')
        except OSError:
            continue
        if any(m in cmd for m in markers):
            try:
                os.kill(int(pid), signal.SIGKILL)
                killed.append(int(pid))
            except OSError:
                pass
    return killed


def kill_group(pgid):
    for sig, pause in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.time() + pause
        while time.time() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def run_test(name, cases, src, tools, machine, args, out_dir):
    iotests_dir = os.path.join(src, 'tests', 'qemu-iotests')
    test_file = os.path.join(iotests_dir, name)
    test_dir = os.path.join(out_dir, 'scratch', name)
    shutil.rmtree(test_dir, ignore_errors=True)
    os.makedirs(test_dir)
    # Unix socket paths are limited to 108 bytes: keep SOCK_DIR short (check
    # uses tempfile.mkdtemp() too).
    sock_dir = tempfile.mkdtemp(prefix=f'ferrovm-iotests-{name}-')
    results = os.path.join(out_dir, 'results', name + '.jsonl')
    log_path = os.path.join(out_dir, 'logs', name + '.log')
    os.makedirs(os.path.dirname(results), exist_ok=True)
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    if os.path.exists(results):
        os.unlink(results)
    env = env_for(src, tools, test_dir, sock_dir, args.imgfmt, machine, args.qemu_options)

    t0 = time.time()
    timed_out = False
    rc = None
    with open(log_path, 'w', encoding='utf-8') as log:
        # Its own session: the test, the emulators and tools it starts share
        # one process group that is killed whatever happens.
        proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, 'case_runner.py'), results, test_file] + cases,
            cwd=iotests_dir, env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            kill_group(proc.pid)
            proc.wait()
            killed = kill_leftovers([test_dir, sock_dir])
            shutil.rmtree(sock_dir, ignore_errors=True)
    elapsed = round(time.time() - t0, 1)
    res = collect(name, results, test_dir, rc, timed_out, args.timeout)
    with open(log_path, encoding='utf-8', errors='replace') as f:
        tail = f.read().rstrip().splitlines()[-5:]
    res.update({'elapsed': elapsed, 'log': shown(log_path), 'log_tail': tail,
                'killed_leftovers': killed})
    return res


def parse_cases(spec):
    """IOTESTS_CASES: 'TEST' or 'TEST:Class' or 'TEST:Class.test_method',
    separated by spaces or commas -> {test: [unittest names]} ([] = all)."""
    sel = collections.OrderedDict()
    for item in re.split(r'[\s,]+', spec.strip()):
        if not item:
            continue
        test, _, case = item.partition(':')
        if not re.fullmatch(r'\d{3}', test):
            raise HarnessError(f'bad case selector {item!r}: expected TEST[:Class[.method]]')
        lst = sel.setdefault(test, [])
        if case:
            if lst is not None:
                lst.append(case)
        else:
            sel[test] = None  # the whole test
    return {t: (c or []) for t, c in sel.items()}


def on_signal(signum, _frame):
    # Unwinds through run_test's finally, which kills the running test.
    raise KeyboardInterrupt(f'signal {signum}')


def main():
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--qemu-prog', default=os.environ.get('QEMU_PROG') or
                   os.path.join(REPO, 'target', 'release', 'ferrovm'))
    p.add_argument('--tests', default=os.environ.get('IOTESTS') or ' '.join(DEFAULT_TESTS),
                   help='test numbers, e.g. "030 041"')
    p.add_argument('--cases', default=os.environ.get('IOTESTS_CASES', ''),
                   help='TEST:Class[.method] selectors; overrides --tests')
    p.add_argument('--timeout', type=float, default=float(os.environ.get('IOTESTS_TIMEOUT') or 900),
                   help='seconds per test file')
    p.add_argument('--strict', action='store_true', default=os.environ.get('IOTESTS_STRICT') == '1',
                   help='exit non-zero if any case fails')
    p.add_argument('--imgfmt', default=os.environ.get('IMGFMT') or 'qcow2')
    p.add_argument('--accel', default=os.environ.get('IOTESTS_ACCEL') or 'auto',
                   help='accelerator put in front of -accel qtest for an emulator without qtest: auto, none, tcg, kvm')
    p.add_argument('--src', default=os.environ.get('IOTESTS_QEMU_SRC', ''),
                   help='an extracted QEMU 7.2 source tree (default: fetch one)')
    p.add_argument('--cache', default=os.path.join(REPO, 'build', 'qemu-src'))
    p.add_argument('--out', default=os.path.join(REPO, 'build', 'iotests'))
    args = p.parse_args()
    args.out = os.path.abspath(args.out)
    args.cache = os.path.abspath(args.cache)

    try:
        if args.cases.strip():
            selection = parse_cases(args.cases)
        else:
            selection = {t: [] for t in re.split(r'[\s,]+', args.tests.strip()) if t}
        if not selection:
            raise HarnessError('no tests selected')
        qemu = executable(args.qemu_prog, 'emulator (QEMU_PROG)')
        # fetch.sh also installs missing qemu-img/qemu-io/qemu-nbd/QSD.
        src = os.path.abspath(args.src) if args.src else fetch_source(args.cache)
        tools = {'qemu': qemu}
        for tool, var in (('qemu-img', 'QEMU_IMG_PROG'), ('qemu-io', 'QEMU_IO_PROG'),
                          ('qemu-nbd', 'QEMU_NBD_PROG'), ('qemu-storage-daemon', 'QSD_PROG')):
            tools[tool] = executable(os.environ.get(var) or tool, f'{tool} ({var})')
        for t in selection:
            if not os.path.isfile(os.path.join(src, 'tests', 'qemu-iotests', t)):
                raise HarnessError(f'no test {t} in {src}/tests/qemu-iotests')
    except HarnessError as e:
        print(f'iotests: error: {e}', file=sys.stderr)
        return 2

    os.makedirs(args.out, exist_ok=True)
    probes = {'accel_help': probe(qemu, ['-accel', 'help'])}
    accel = fallback_accel(probes['accel_help'], args.accel)
    if accel:
        # QEMU_PROG must stay one executable path (iotests.py runs it with
        # Popen), so the accelerator goes in through an exec wrapper. It has
        # the binary's own name: 041 strips "<basename(QEMU_PROG)>: " from
        # QEMU's error messages (error_report prefixes argv[0]'s basename).
        os.makedirs(os.path.join(args.out, f'accel-{accel}'), exist_ok=True)
        wrapper = os.path.join(args.out, f'accel-{accel}', os.path.basename(qemu))
        with open(wrapper, 'w', encoding='utf-8') as f:
            f.write('#!/bin/sh\n# Written by tests/iotests/run.py: see fallback_accel there.\n'
                    f'exec {shlex.quote(qemu)} -accel {accel} -S "$@"\n')
        os.chmod(wrapper, 0o755)
        tools['qemu'] = wrapper
    # testenv.get_default_machine: `QEMU_PROG -machine help` (QEMU's check
    # stops here if it fails; we record it and go on with '').
    probes['machine_help'] = probe(tools['qemu'], ['-machine', 'help'])
    machine = default_machine(probes['machine_help']['output']) if probes['machine_help']['exit'] == 0 else ''
    # testenv.py: QEMU_OPTIONS (no -machine for x86_64)
    args.qemu_options = '-nodefaults -display none -accel qtest'
    # The probes iotests.py makes: _verify_virtio_blk, supported_formats.
    opts = args.qemu_options.split()
    probes['device_help'] = probe(tools['qemu'], opts + ['-M', 'none', '-device', 'help'])
    probes['format_help'] = probe(tools['qemu'], opts + ['-drive', 'format=help'])
    for k, v in probes.items():
        v['output'] = v['output'][:4000]
    print(f'iotests: QEMU source {src}')
    print(f'iotests: emulator {qemu}; default machine {machine!r}; QEMU_OPTIONS {args.qemu_options!r}')
    if accel:
        print(f'iotests: {qemu} has no qtest accelerator: QEMU_PROG is {tools["qemu"]}, '
              f'which puts -accel {accel} -S first')
    for k, v in probes.items():
        if v['exit'] != 0:
            print(f"iotests: probe {' '.join(v['args'])} -> exit {v['exit']}: {first_line(v['output'])}")

    summary = {'qemu_prog': qemu, 'qemu_src': src, 'imgfmt': args.imgfmt,
               'default_machine': machine, 'qemu_options': args.qemu_options, 'probes': probes, 'tools': tools,
               'timeout': args.timeout, 'selection': selection, 'tests': {}}
    for name, cases in selection.items():
        print(f"iotests: running {name}" + (f" ({' '.join(cases)})" if cases else ''), flush=True)
        r = run_test(name, cases, src, tools, machine, args, args.out)
        summary['tests'][name] = r
        print(f"iotests: {name} {r['status']}: {r['passed']} passed, {r['failed']} failed, "
              f"{r['skipped']} skipped in {r['elapsed']}s", flush=True)
    tests = summary['tests'].values()
    summary['totals'] = {k: sum(r[src_k] for r in tests) for k, src_k in
                         (('cases', 'cases_total'), ('passed', 'passed'),
                          ('failed', 'failed'), ('skipped', 'skipped'))}
    summary['totals']['elapsed'] = round(sum(r['elapsed'] for r in tests), 1)
    path = os.path.join(args.out, 'summary.json')
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(summary, f, indent=1)
    print_table(summary)
    print(f'iotests: summary in {shown(path)}')
    # A whole test not run (e.g. "Missing virtio-blk in QEMU binary") counts
    # too: a selected case that never ran has not passed.
    bad = summary['totals']['failed'] or any(
        r['status'] in ('crashed', 'timeout', 'not run') for r in tests)
    if args.strict and bad:
        return 1
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except KeyboardInterrupt as e:
        print(f'iotests: interrupted ({e or "SIGINT"}); the running test was killed', file=sys.stderr)
        sys.exit(130)
