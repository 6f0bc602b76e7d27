//! Arbitrary bytes through the frame decoder and both message decoders:
//! no panic, no unbounded allocation, and whatever decodes re-encodes to a
//! frame that decodes to the same message.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use weir_proto::{Request, Response, decode_frame};

const FRAME_BYTES_MAX: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = decode_frame(&mut buf, FRAME_BYTES_MAX) {
        if let Ok(request) = Request::decode(frame.clone()) {
            let mut encoded = BytesMut::new();
            request.encode(&mut encoded);
            let again = decode_frame(&mut encoded, usize::MAX).expect("valid").expect("complete");
            assert_eq!(Request::decode(again).expect("re-decodes"), request);
        }
        if let Ok(response) = Response::decode(frame) {
            let mut encoded = BytesMut::new();
            response.encode(&mut encoded);
            let again = decode_frame(&mut encoded, usize::MAX).expect("valid").expect("complete");
            assert_eq!(Response::decode(again).expect("re-decodes"), response);
        }
    }
});
