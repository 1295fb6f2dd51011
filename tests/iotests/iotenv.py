"""The environment QEMU 7.2's `check` gives a test (tests/qemu-iotests/testenv.py),
and the probes of the emulator that testenv.py and iotests.py make."""

import os
import random
import subprocess
import sys


def probe(qemu_prog, args, timeout=20):
    """Runs the emulator once the way testenv.py/iotests.py probe it."""
    try:
        r = subprocess.run([qemu_prog] + args, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           universal_newlines=True, timeout=timeout,
                           start_new_session=True)
        return {'args': args, 'exit': r.returncode, 'output': r.stdout}
    except subprocess.TimeoutExpired as e:
        return {'args': args, 'exit': None, 'output': f'timeout after {timeout}s: {e}'}


def default_machine(machine_help):
    """testenv.get_default_machine, on the output of `-machine help`."""
    machines = machine_help.split('\n')
    try:
        m = next(m for m in machines if m.endswith(' (default)'))
    except StopIteration:
        return ''
    m = m.split(' ', 1)[0]
    alias = next((a for a in machines if a.endswith(f' (alias of {m})')), None)
    return alias.split(' ', 1)[0] if alias else m


def fallback_accel(accel_help, choice):
    """The accelerator to put in front of the tests' options, or None.

    Debian's QEMU 7.2 ships without the qtest accelerator module (its
    debian/rules deletes accel-qtest-*.so), so the `-accel qtest` that
    qemu.machine.qtest and QEMU_OPTIONS pass fails there with "invalid
    accelerator qtest". QEMU tries the -accel options in command-line order and
    stops at the first that initializes (softmmu/vl.c configure_accelerators),
    so an `-accel tcg` in front of them is used and `-accel qtest` is never
    looked at: no error message in the emulator's log, which 041's
    TestRepairQuorum.test_with_other_parents_after_mirror_start compares.
    With qtest no guest code runs; with tcg SeaBIOS would, and its boot-time
    reads of the test's virtio disk race the tests that suspend that disk's
    requests (blkdebug breakpoints; 030 TestStreamStop hangs in a drain), so
    the wrapper adds -S too: the vCPUs never start. The four block-job tests
    send no qtest commands and look at job status only, not the run state.
    Auto mode does this only when `-accel help` succeeds
    and lists accelerators without qtest; an emulator that rejects
    `-accel help` gets exactly the options the tests send.
    """
    if choice == 'none':
        return None
    if choice != 'auto':
        return choice
    if accel_help['exit'] != 0 or 'Accelerators supported' not in accel_help['output']:
        return None
    names = [l.strip() for l in accel_help['output'].splitlines()[1:] if l.strip()]
    if not names or 'qtest' in names:
        return None
    # tcg, not kvm: with kvm QEMU's default CPU model warns about CPUID bits
    # the host lacks, and 041 (above) finds that warning in the log.
    return 'tcg' if 'tcg' in names else None


def env_for(src, tools, test_dir, sock_dir, imgfmt, machine, qemu_options):
    """The environment QEMU 7.2's check sets for a test (testenv.TestEnv with
    -IMGFMT, file protocol, default cache and aio modes, no -o/-misalign)."""
    iotests_dir = os.path.join(src, 'tests', 'qemu-iotests')
    env = dict(os.environ)
    env.update({
        # init_directories
        'PYTHONPATH': os.pathsep.join(filter(None, (
            iotests_dir, os.path.join(src, 'python'), os.environ.get('PYTHONPATH')))),
        'TEST_DIR': test_dir,
        'SOCK_DIR': sock_dir,
        'SAMPLE_IMG_DIR': os.path.join(iotests_dir, 'sample_images'),
        # init_binaries
        'PYTHON': sys.executable,
        'QEMU_PROG': tools['qemu'],
        'QEMU_IMG_PROG': tools['qemu-img'],
        'QEMU_IO_PROG': tools['qemu-io'],
        'QEMU_NBD_PROG': tools['qemu-nbd'],
        'QSD_PROG': tools['qemu-storage-daemon'],
        # __init__: cachemode None -> writeback and CACHEMODE_IS_DEFAULT
        'IMGFMT': imgfmt,
        'IMGPROTO': 'file',
        'AIOMODE': 'threads',
        'CACHEMODE': 'writeback',
        'CACHEMODE_IS_DEFAULT': 'true',
        'QEMU_OPTIONS': qemu_options,
        'QEMU_DEFAULT_MACHINE': machine,
        'IMGFMT_GENERIC': 'true',
        'IMGOPTSSYNTAX': 'false',
        'QEMU_IO_OPTIONS': f'--cache writeback --aio threads -f {imgfmt}',
        'QEMU_IO_OPTIONS_NO_FMT': '--cache writeback --aio threads',
        'MALLOC_PERTURB_': os.environ.get('MALLOC_PERTURB_', str(random.randrange(1, 255))),
    })
    # Passed through only when set, as testenv.py does.
    for v in ('IMGOPTS', 'QEMU_IMG_OPTIONS', 'QEMU_NBD_OPTIONS'):
        if not os.environ.get(v):
            env.pop(v, None)
    for v in ('GDB_OPTIONS', 'VALGRIND_QEMU', 'PRINT_QEMU'):
        env.pop(v, None)
    return env
