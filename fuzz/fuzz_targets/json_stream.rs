//! Arbitrary bytes, fed in arbitrary chunks, into QEMU's JSON streamer
//! model: no panic, no hang, and chunking never changes the result.
#![no_main]
use libfuzzer_sys::fuzz_target;
use qmp::json_stream::JsonStream;

fn collect(js: &mut JsonStream, out: &mut Vec<String>) {
    while let Some(item) = js.next_item() {
        out.push(match item {
            Ok(v) => {
                let text = v.to_json();
                // Whatever we print, we can read back to the same value
                // (unless it holds a non-finite number, printed as C does).
                if !text.contains("inf") && !text.contains("nan") {
                    let mut again = JsonStream::new();
                    again.feed(text.as_bytes());
                    again.feed(b" ");
                    let back = again.next_item().expect("reparse").expect("valid");
                    assert_eq!(back.to_json(), text);
                }
                format!("ok {text}")
            }
            Err(e) => format!("err {e}"),
        });
    }
}

fuzz_target!(|data: &[u8]| {
    // First byte chooses a chunk size for the second pass.
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let mut whole = JsonStream::new();
    whole.feed(data);
    let mut a = Vec::new();
    collect(&mut whole, &mut a);

    let mut chunked = JsonStream::new();
    let mut b = Vec::new();
    for chunk in data.chunks(split as usize % 17 + 1) {
        chunked.feed(chunk);
        collect(&mut chunked, &mut b);
    }
    assert_eq!(a, b);
});
