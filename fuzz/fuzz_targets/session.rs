//! Arbitrary client bytes through a whole QMP session (negotiation,
//! dispatch, argument validation, HMP) against the fake machine: no panic,
//! every reply is one CRLF-terminated line of valid JSON.
#![no_main]
use libfuzzer_sys::fuzz_target;
use qmp::json_stream::JsonStream;
use qmp::testing::FakeVm;
use qmp::Session;

fuzz_target!(|data: &[u8]| {
    let mut s = Session::new();
    let mut vm = FakeVm {
        cpus: 2,
        ..FakeVm::default()
    };
    // Half the inputs start negotiated so commands are reached.
    if data.first().is_some_and(|b| b & 1 == 1) {
        s.process(b"{\"execute\":\"qmp_capabilities\"}", &mut vm);
    }
    let out = s.process(data, &mut vm);
    for line in out.split_terminator("\r\n") {
        assert!(!line.contains('\n') && !line.contains('\r'));
        let mut js = JsonStream::new();
        js.feed(line.as_bytes());
        match js.next_item() {
            Some(Ok(v)) => assert!(v.as_dict().is_some()),
            // An echoed id of 1e400 prints as C prints infinity.
            _ => assert!(line.contains("inf") || line.contains("nan"), "{line}"),
        }
    }
});
