//! Target `frames`: a byte stream of well-formed frames, bare headers with any length and raw
//! bytes, pushed into `FrameDecoder` in pieces of any size and read again with the async
//! `read_frame`. Every frame's payload is then decoded as a `Message`.
//!
//! Oracle beyond "no panic": the decoder (however the stream is cut) and `read_frame` return
//! the same frames and stop with the same error as a direct reading of the layout (a u32
//! big-endian length, never 0 nor above the limit, then that many bytes); a payload that
//! decodes as a message re-encodes to the same bytes.

use tinychain_core::message::Message;
use tinychain_net::frame::{decode_message, read_frame, FrameDecoder, FrameError, FRAME_BYTES_MAX, FRAME_HEADER_BYTES};

#[derive(arbitrary::Arbitrary, Debug)]
pub struct Input {
    /// The frame limit the reader enforces (small, so lengths above it are easy to reach).
    pub limit: u16,
    pub items: Vec<Item>,
    /// The sizes of the pieces the stream arrives in (0 means 1); the rest arrives at once.
    pub pieces: Vec<u16>,
}

#[derive(arbitrary::Arbitrary, Debug)]
pub enum Item {
    /// A frame as an honest peer writes it.
    Frame(Vec<u8>),
    /// A header announcing `length` bytes, and nothing after it.
    Header(u32),
    /// Bytes with no framing.
    Raw(Vec<u8>),
}

/// How reading a stream ended after its complete frames.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The stream ended between frames.
    Clean,
    /// The stream ended inside a frame.
    Truncated,
    Empty,
    TooLarge(u64),
}

/// The frames in `stream` and how it ends, read straight from the layout.
fn expected(stream: &[u8], limit: u32) -> (Vec<&[u8]>, End) {
    let mut frames = Vec::new();
    let mut rest = stream;
    loop {
        if rest.is_empty() {
            return (frames, End::Clean);
        }
        let Some((header, after)) = rest.split_first_chunk::<FRAME_HEADER_BYTES>() else {
            return (frames, End::Truncated);
        };
        let length = u32::from_be_bytes(*header);
        if length == 0 {
            return (frames, End::Empty);
        }
        if length > limit {
            return (frames, End::TooLarge(u64::from(length)));
        }
        let length = length as usize;
        if after.len() < length {
            return (frames, End::Truncated);
        }
        frames.push(&after[..length]);
        rest = &after[length..];
    }
}

fn decoder_end(error: FrameError) -> End {
    match error {
        FrameError::Empty => End::Empty,
        FrameError::TooLarge { length, .. } => End::TooLarge(length),
        other => panic!("the decoder reported {other:?}"),
    }
}

fn reader_end(error: FrameError) -> End {
    match error {
        FrameError::Closed => End::Clean,
        FrameError::Io { kind: std::io::ErrorKind::UnexpectedEof, .. } => End::Truncated,
        other => decoder_end(other),
    }
}

fn read_all(mut stream: &[u8], limit: u32) -> (Vec<Vec<u8>>, End) {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime =
            tokio::runtime::Builder::new_current_thread().build().expect("a current-thread runtime");
    }
    RUNTIME.with(|runtime| {
        runtime.block_on(async {
            let mut frames = Vec::new();
            loop {
                match read_frame(&mut stream, limit).await {
                    Ok(frame) => frames.push(frame),
                    Err(error) => return (frames, reader_end(error)),
                }
            }
        })
    })
}

pub fn check(input: &Input) -> String {
    let limit = u32::from(input.limit).min(FRAME_BYTES_MAX);
    let mut stream = Vec::new();
    for item in &input.items {
        match item {
            Item::Frame(payload) => {
                stream.extend_from_slice(&(payload.len() as u32).to_be_bytes());
                stream.extend_from_slice(payload);
            }
            Item::Header(length) => stream.extend_from_slice(&length.to_be_bytes()),
            Item::Raw(bytes) => stream.extend_from_slice(bytes),
        }
    }
    let (want_frames, want_end) = expected(&stream, limit);

    let mut decoder = FrameDecoder::new(limit);
    let mut frames = Vec::new();
    let mut end = None;
    let mut rest = stream.as_slice();
    let mut pieces = input.pieces.iter();
    while end.is_none() {
        let size = pieces.next().map_or(rest.len(), |size| usize::from(*size).max(1)).min(rest.len());
        let (piece, after) = rest.split_at(size);
        rest = after;
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(error) => {
                    end = Some(decoder_end(error));
                    break;
                }
            }
        }
        if rest.is_empty() && end.is_none() {
            end = Some(if decoder.is_inside_frame() { End::Truncated } else { End::Clean });
        }
    }
    let end = end.expect("set above");
    assert_eq!(frames, want_frames, "the decoder's frames follow the layout");
    assert_eq!(end, want_end, "the decoder stops where the layout says");
    let (read_frames, read_end) = read_all(&stream, limit);
    assert_eq!(read_frames, want_frames, "read_frame's frames follow the layout");
    assert_eq!(read_end, want_end, "read_frame stops where the layout says");

    let mut messages = 0;
    for frame in &frames {
        if let Ok(message) = decode_message(frame) {
            assert_eq!(&Message::encode(&message), frame, "a decoded message re-encodes to its bytes");
            messages += 1;
        }
    }
    format!("{} frames ({messages} messages), {end:?}", frames.len())
}

pub fn run(data: &[u8]) -> String {
    match crate::structured::<Input>(data) {
        None => "not an input".to_string(),
        Some(input) => check(&input),
    }
}
