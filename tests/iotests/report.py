"""Turns case_runner.py's events into per-test results and prints the table."""

import collections
import json
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def first_line(text, limit=200):
    """The line that says what went wrong: for a VM that did not start, the
    emulator's own message (VMLaunchFailure's "Output:"), else the exception
    line of the traceback, else its last line."""
    lines = [l.strip() for l in (text or '').strip().splitlines() if l.strip()]
    out = [l for l in lines if l.startswith('Output: ')]
    exc = [l for l in lines if re.match(r'[A-Za-z_][\w.]*(Error|Exception|Failure|Exit)\b', l)]
    if out:
        line = 'VM launch failed: ' + out[-1][len('Output: '):]
    elif exc:
        line = exc[-1]
    else:
        line = lines[-1] if lines else ''
    return line if len(line) <= limit else line[:limit - 3] + '...'


def shown(path):
    rel = os.path.relpath(path, REPO)
    return path if rel.startswith('..') else rel


def collect(name, results, test_dir, rc, timed_out, timeout):
    events = []
    if os.path.exists(results):
        with open(results, encoding='utf-8') as f:
            for line in f:
                try:
                    events.append(json.loads(line))
                except ValueError:
                    pass
    plan, outcome, started, notrun = [], {}, [], None
    class_errors = {}
    began = any(e['event'] == 'begin' for e in events)
    for e in events:
        if e['event'] == 'plan':
            plan = e['ids']
        elif e['event'] == 'start':
            started.append(e['id'])
        elif e['event'] == 'result':
            m = re.match(r'(setUpClass|tearDownClass|setUpModule|tearDownModule) \((?:__main__\.)?(.*)\)$', e['id'])
            if m:
                class_errors[m.group(2)] = e
            elif e['id'] not in outcome or outcome[e['id']]['status'] == 'pass':
                # a tearDown error after a pass reports the case twice
                outcome[e['id']] = {'status': e['status'], 'detail': e.get('detail', '')}
        elif e['event'] == 'notrun':
            notrun = e['detail']
    cases = {}
    for cid in plan + [c for c in outcome if c not in plan]:
        if cid in outcome:
            cases[cid] = outcome[cid]
            continue
        cls = cid.rsplit('.', 1)[0]
        if cls in class_errors or cid.split('.')[0] in class_errors:
            err = class_errors.get(cls) or class_errors[cid.split('.')[0]]
            cases[cid] = {'status': 'error', 'detail': err.get('detail', '')}
        elif notrun is not None:
            cases[cid] = {'status': 'skip', 'detail': f'test not run: {notrun}'}
        elif timed_out and cid in started:
            cases[cid] = {'status': 'fail', 'detail': f'timeout: the test was killed after {timeout}s'}
        elif timed_out:
            cases[cid] = {'status': 'skip', 'detail': f'not reached: the test was killed after {timeout}s'}
        else:
            cases[cid] = {'status': 'fail', 'detail': f'no result: the test exited with status {rc}'}
    # Reasons that case_notrun()/case_skip() wrote (TEST_DIR/NNN.casenotrun).
    casenotrun = []
    cnr = os.path.join(test_dir, name + '.casenotrun')
    if os.path.exists(cnr):
        with open(cnr, encoding='utf-8') as f:
            casenotrun = [l.strip() for l in f if l.strip()]

    counts = collections.Counter(c['status'] for c in cases.values())
    failed = counts['fail'] + counts['error']
    if not began:
        status = 'crashed'
    elif timed_out:
        status = 'timeout'
    elif notrun is not None:
        status = 'not run'
    elif not plan:
        status = 'crashed'
    elif failed:
        status = 'fail'
    else:
        status = 'pass'
    skip_reasons = collections.Counter(
        re.sub(r"^<?[\w.]+ testMethod=\w+>?: |^test_\w+ \([\w.]+\): ", '', c['detail'])
        for c in cases.values() if c['status'] == 'skip')
    fail_reasons = collections.Counter(
        first_line(c['detail']) for c in cases.values() if c['status'] in ('fail', 'error'))
    return {
        'status': status, 'exit': rc, 'notrun': notrun,
        'cases_total': len(cases), 'passed': counts['pass'], 'failed': failed,
        'skipped': counts['skip'],
        'failing_cases': [cid for cid, c in cases.items() if c['status'] in ('fail', 'error')],
        'skip_reasons': dict(skip_reasons.most_common()),
        'failure_reasons': dict(fail_reasons.most_common()),
        'casenotrun': casenotrun, 'cases': cases,
    }


def print_table(summary):
    tests = summary['tests']
    print()
    print(f"iotests against {summary['qemu_prog']} (IMGFMT={summary['imgfmt']}, IMGPROTO=file)")
    hdr = f"{'test':6} {'status':8} {'cases':>5} {'passed':>6} {'failed':>6} {'skipped':>7} {'time':>7}"
    print(hdr)
    print('-' * len(hdr))
    for name, r in tests.items():
        print(f"{name:6} {r['status']:8} {r['cases_total']:5} {r['passed']:6} {r['failed']:6} "
              f"{r['skipped']:7} {r['elapsed']:6.1f}s")
    t = summary['totals']
    print('-' * len(hdr))
    print(f"{'total':6} {'':8} {t['cases']:5} {t['passed']:6} {t['failed']:6} {t['skipped']:7} "
          f"{t['elapsed']:6.1f}s")
    for name, r in tests.items():
        if not (r['failing_cases'] or r['skip_reasons'] or r['status'] in ('crashed', 'timeout')):
            continue
        print(f"\n{name}: {r['status']}" + (f" (exit {r['exit']}, log {r['log']})" if r['status'] != 'pass' else ''))
        if r['notrun']:
            print(f"  not run: {r['notrun']}")
            # iotests.py decides that from its probes of the emulator.
            for v in summary['probes'].values():
                if v['exit'] != 0:
                    print(f"    (probe {' '.join(v['args'])}: exit {v['exit']}: {first_line(v['output'])})")
        if r['status'] == 'crashed':
            print('  ' + '\n  '.join(r['log_tail']))
        for reason, n in r['skip_reasons'].items():
            if not reason.startswith('test not run: '):
                print(f"  skipped {n:3}: {reason}")
        for reason, n in r['failure_reasons'].items():
            print(f"  failed  {n:3}: {reason}")
        if r['failing_cases']:
            print('  failing cases: ' + ' '.join(r['failing_cases']))
        if r['killed_leftovers']:
            print(f"  killed leftover processes: {r['killed_leftovers']}")
    print()
    # The plain closing line (N passed, N failed, N skipped) that CI reads.
    print(f"iotests: {t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped")
