"""Runs one of QEMU's unittest-style iotests and records every case's outcome.

Usage (run.py does this, with the environment QEMU's `check` would set):
    python3 case_runner.py RESULTS.jsonl /path/to/tests/qemu-iotests/030 [CASE ...]

The test runs exactly as `check` runs it (`iotests.main()` → `unittest.main()`
in QEMU 7.2's tests/qemu-iotests/iotests.py), with two hooks installed on the
`iotests` module before the test file imports it:
  * execute_unittest: the same ReproducibleTestRunner, but verbose (per-case
    lines in the log) and with a result class that appends one JSON line per
    event to RESULTS.jsonl, so run.py never has to parse unittest's text;
  * notrun: a whole test skipped before unittest starts (e.g. "Missing
    virtio-blk in QEMU binary") still lists the cases it did not run.
CASE arguments are unittest names relative to the test module
("TestSingleDrive" or "TestSingleDrive.test_stream").
"""

import json
import os
import runpy
import sys
import unittest


def _case_id(test):
    tid = test.id()
    return tid[len('__main__.'):] if tid.startswith('__main__.') else tid


def _walk(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from _walk(t)
        else:
            yield t


def main():
    results_path, test_file, cases = sys.argv[1], sys.argv[2], sys.argv[3:]
    # iotests.notrun()/case_notrun() name their files after basename(argv[0]).
    sys.argv = [test_file] + cases
    out = open(results_path, 'a', encoding='utf-8')

    def rec(**kw):
        out.write(json.dumps(kw) + '\n')
        out.flush()

    import iotests  # from PYTHONPATH: the fetched tests/qemu-iotests

    class Result(iotests.ReproducibleTestResult):
        def startTest(self, test):
            rec(event='start', id=_case_id(test))
            super().startTest(test)

        def addSuccess(self, test):
            rec(event='result', id=_case_id(test), status='pass')
            super().addSuccess(test)

        def addFailure(self, test, err):
            rec(event='result', id=_case_id(test), status='fail',
                detail=self._exc_info_to_string(err, test))
            super().addFailure(test, err)

        def addError(self, test, err):
            # setUpClass/tearDownClass errors come with an _ErrorHolder whose
            # id is "setUpClass (__main__.TestFoo)".
            rec(event='result', id=_case_id(test), status='error',
                detail=self._exc_info_to_string(err, test))
            super().addError(test, err)

        def addSkip(self, test, reason):
            rec(event='result', id=_case_id(test), status='skip', detail=reason)
            super().addSkip(test, reason)

        def addExpectedFailure(self, test, err):
            rec(event='result', id=_case_id(test), status='pass',
                detail='expected failure')
            super().addExpectedFailure(test, err)

        def addUnexpectedSuccess(self, test):
            rec(event='result', id=_case_id(test), status='fail',
                detail='unexpected success')
            super().addUnexpectedSuccess(test)

    class Runner(iotests.ReproducibleTestRunner):
        def __init__(self, **kwargs):
            kwargs['resultclass'] = Result
            super().__init__(**kwargs)

        def run(self, test):
            rec(event='plan', ids=[_case_id(t) for t in _walk(test)])
            return super().run(test)

    def execute_unittest(argv, debug=False):
        # Same call as iotests.execute_unittest, verbosity 2 for the log.
        unittest.main(argv=argv, testRunner=Runner, verbosity=2,
                      warnings=None if sys.warnoptions else 'ignore')

    real_notrun = iotests.notrun

    def notrun(reason):
        module = sys.modules.get('__main__')
        try:
            loader = unittest.defaultTestLoader
            suite = (loader.loadTestsFromNames(cases, module) if cases
                     else loader.loadTestsFromModule(module))
            rec(event='plan', ids=[_case_id(t) for t in _walk(suite)])
        except Exception as e:  # the plan is informative only
            rec(event='plan_error', detail=repr(e))
        rec(event='notrun', detail=reason)
        real_notrun(reason)

    iotests.execute_unittest = execute_unittest
    iotests.notrun = notrun
    rec(event='begin')
    # The test file sees __name__ == '__main__' and `import iotests` finds the
    # hooked module in sys.modules.
    runpy.run_path(test_file, run_name='__main__')


if __name__ == '__main__':
    main()
