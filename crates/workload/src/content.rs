//! What the bytes of a generated file look like.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use thiserror::Error;

use crate::rng::{Purpose, Xoshiro256PlusPlus};
use crate::vocab::WORDS;

/// The kind of bytes a generated file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Content {
    /// Uniformly random bytes: incompressible, like media or already
    /// encrypted or compressed data.
    Random,
    /// English-looking prose: words drawn from a built-in vocabulary with a
    /// Zipf distribution, with commas, full stops, capitals, paragraphs and
    /// lines wrapped near 72 columns, and phrases that recur. It compresses
    /// like real text: zstd at its default level makes it about 3.5 times
    /// smaller, gzip about 3.9 times.
    Text,
    /// All zero bytes (written out, not sparse): the best case for a
    /// compressor and for the page cache.
    Zeros,
}

/// The content names accepted by [`Content::from_str`].
const CONTENT_NAMES: &str = "random, text or zeros";

/// An unknown content name.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("unknown content {0:?} (expected {CONTENT_NAMES})")]
pub struct ContentError(pub String);

impl FromStr for Content {
    type Err = ContentError;

    /// Reads `random`, `text` or `zeros`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "random" => Ok(Content::Random),
            "text" => Ok(Content::Text),
            "zeros" => Ok(Content::Zeros),
            _ => Err(ContentError(s.to_owned())),
        }
    }
}

impl fmt::Display for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Content::Random => "random",
            Content::Text => "text",
            Content::Zeros => "zeros",
        })
    }
}

impl Content {
    /// The file name extension of files with this content.
    pub fn extension(self) -> &'static str {
        match self {
            Content::Random | Content::Zeros => "bin",
            Content::Text => "txt",
        }
    }

    /// Fills `buf` with block `block` of file `file` for `seed`.
    ///
    /// Every block is a pure function of its four arguments, so blocks can
    /// be made on any thread in any order.
    pub(crate) fn fill_block(self, seed: u64, file: u64, block: u64, buf: &mut [u8]) {
        match self {
            Content::Zeros => buf.fill(0),
            Content::Random => {
                Xoshiro256PlusPlus::derive(Purpose::Block, seed, [file, block]).fill_bytes(buf)
            }
            Content::Text => {
                let mut rng = Xoshiro256PlusPlus::derive(Purpose::Block, seed, [file, block]);
                fill_text(&mut rng, buf);
            }
        }
    }
}

/// log2 of the number of slots in the Zipf lookup table.
const ZIPF_TABLE_BITS: u32 = 14;

/// Slots in the Zipf lookup table: enough that the rarest word still gets
/// about one slot, few enough (32 KiB) to stay in the L1 cache.
const ZIPF_TABLE_LEN: usize = 1 << ZIPF_TABLE_BITS;

/// Text lines are broken at the first space past this column.
const WRAP_COLUMN: usize = 72;

/// Out of 256: how often a word ends a sentence (about one word in 16).
const SENTENCE_END: u64 = 16;

/// Out of 256: how often a sentence end also ends a paragraph (added to
/// [`SENTENCE_END`]).
const PARAGRAPH_END: u64 = SENTENCE_END + 3;

/// Out of 256: how often a word is followed by a comma (added to
/// [`PARAGRAPH_END`]).
const COMMA: u64 = PARAGRAPH_END + 16;

/// Out of 256: how often a word starts a repeat of a phrase from a little
/// earlier in the text instead of being drawn afresh. Real prose repeats
/// word pairs and phrases far more than independent draws would; these
/// repeats give the text the matches a dictionary compressor finds in real
/// text, which brings zstd's ratio from under 3 to about 3.5.
const PHRASE_REPEAT: u64 = 40;

/// Words remembered for phrase repeats (a power of two).
const PHRASE_HISTORY: usize = 256;

/// A repeated phrase is 2 to 2 + this many words long, punctuation
/// included.
const PHRASE_EXTRA_WORDS: u64 = 8;

/// Room for one piece of text (a word, its mark and a space or line
/// breaks): the padded word is written in one 16-byte store, then the mark
/// over its end.
const PIECE_SLOT: usize = 16;

/// The bit that tells a lowercase ASCII letter from its capital.
const CAPITAL_BIT: u32 = 5;

/// What follows a word; a piece of text is a word and its mark.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    /// A space.
    Space = 0,
    /// A comma and a space.
    Comma = 1,
    /// A full stop and a space; the next word is capitalised.
    FullStop = 2,
    /// A full stop and a blank line; the next word is capitalised.
    Paragraph = 3,
}

/// Marks per word: a piece is numbered `rank * MARKS + mark`.
const MARKS: usize = 4;

/// Per mark (by discriminant), the four bytes written over a word's
/// trailing space: the mark, then its space or line breaks (what follows
/// the piece is overwritten by the next one).
const MARK_TEXT: [[u8; 4]; MARKS] = [*b"    ", *b",   ", *b".   ", *b".\n\n "];

/// Per mark, the bytes it adds to the word and its space.
const MARK_EXTRA: [usize; MARKS] = [0, 1, 1, 2];

/// The mark for each value of 8 random bits, by discriminant, with the odds
/// of [`SENTENCE_END`], [`PARAGRAPH_END`] and [`COMMA`]: a table rather than
/// comparisons, because a branch on random bits is mispredicted often.
const MARK_OF: [u8; 256] = {
    let mut table = [Mark::Space as u8; 256];
    let mut bits = 0;
    while bits < 256 {
        let b = bits as u64;
        table[bits] = if b < SENTENCE_END {
            Mark::FullStop as u8
        } else if b < PARAGRAPH_END {
            Mark::Paragraph as u8
        } else if b < COMMA {
            Mark::Comma as u8
        } else {
            Mark::Space as u8
        };
        bits += 1;
    }
    table
};

/// Every word followed by a space and padded to [`PIECE_SLOT`] bytes,
/// with the length of word and space (a table of 8 KiB).
fn padded_words() -> &'static [([u8; PIECE_SLOT], u8)] {
    static WORDS_PADDED: OnceLock<Vec<([u8; PIECE_SLOT], u8)>> = OnceLock::new();
    WORDS_PADDED.get_or_init(|| {
        WORDS
            .iter()
            .map(|word| {
                // Capitals are made by clearing bit 5 of the first byte,
                // which needs a lowercase ASCII letter there.
                assert!(word.as_bytes()[0].is_ascii_lowercase(), "{word}");
                // The word and the longest mark text must fit.
                assert!(word.len() + 4 <= PIECE_SLOT, "{word} fits a slot");
                let mut bytes = [b' '; PIECE_SLOT];
                bytes[..word.len()].copy_from_slice(word.as_bytes());
                (
                    bytes,
                    u8::try_from(word.len() + 1).expect("words are short"),
                )
            })
            .collect()
    })
}

/// Maps 14 random bits to a word rank with Zipf's law of exponent 1: rank
/// `r` is drawn with probability proportional to `1 / (r + 1)`.
///
/// The weights are plain IEEE divisions and sums in a fixed order, so the
/// table (and so the text) is the same on every platform.
fn zipf_table() -> &'static [u16; ZIPF_TABLE_LEN] {
    static TABLE: OnceLock<Box<[u16; ZIPF_TABLE_LEN]>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let weights: Vec<f64> = (0..WORDS.len()).map(|r| 1.0 / (r as f64 + 1.0)).collect();
        let total: f64 = weights.iter().sum();
        let mut table = Box::new([0u16; ZIPF_TABLE_LEN]);
        let mut rank = 0usize;
        let mut cumulative = weights[0] / total;
        for (slot, entry) in table.iter_mut().enumerate() {
            let position = (slot as f64 + 0.5) / ZIPF_TABLE_LEN as f64;
            while position > cumulative && rank + 1 < WORDS.len() {
                rank += 1;
                cumulative += weights[rank] / total;
            }
            *entry = u16::try_from(rank).expect("the vocabulary has fewer than 65536 words");
        }
        table
    })
}

/// Bytes of room one step of [`TextWriter::step`] may write past its
/// position.
const STEP_ROOM: usize = PIECE_SLOT;

/// The state of a text stream between two words.
#[derive(Clone)]
struct TextWriter {
    /// Bytes written.
    pos: usize,
    /// Bytes since the last line break.
    column: usize,
    /// Whether the next word starts a sentence.
    capitalize: bool,
    /// The last [`PHRASE_HISTORY`] pieces (`rank * MARKS + mark`), as a
    /// ring.
    history: [u16; PHRASE_HISTORY],
    /// Words written so far (the ring's next slot, modulo its size).
    words: usize,
    /// Where the phrase being repeated continues in the ring.
    repeat_from: usize,
    /// Words of that phrase still to repeat.
    repeat_left: u64,
    /// [`zipf_table`], looked up once.
    zipf: &'static [u16; ZIPF_TABLE_LEN],
    /// [`padded_words`], looked up once.
    words_padded: &'static [([u8; PIECE_SLOT], u8)],
}

impl TextWriter {
    fn new() -> Self {
        Self {
            pos: 0,
            column: 0,
            capitalize: true,
            history: [0; PHRASE_HISTORY],
            words: 0,
            repeat_from: 0,
            repeat_left: 0,
            zipf: zipf_table(),
            words_padded: padded_words(),
        }
    }

    /// The next piece: the next of a phrase being repeated, the first of a
    /// new repeat, or a fresh draw (a Zipf rank from the low 14 bits, a
    /// mark from the next 8).
    ///
    /// Written without branches on random bits where it can be: a
    /// mispredicted branch per word would cost more than all the rest.
    #[inline(always)]
    fn next_piece(&mut self, bits: u64) -> usize {
        let starts = self.repeat_left == 0
            && (bits >> 22) & 0xff < PHRASE_REPEAT
            && self.words >= PHRASE_HISTORY;
        // A distance of 2 to PHRASE_HISTORY - 1 words back, by multiply-high.
        let distance = 2 + ((((bits >> 30) & 0xffff) as usize * (PHRASE_HISTORY - 2)) >> 16);
        let length = 2 + (bits >> 46) % (PHRASE_EXTRA_WORDS + 1);
        // All ones when a repeat starts: selects without a branch.
        let start_mask = 0usize.wrapping_sub(usize::from(starts));
        self.repeat_from =
            (self.words.wrapping_sub(distance) & start_mask) | (self.repeat_from & !start_mask);
        self.repeat_left = (length & start_mask as u64) | (self.repeat_left & !(start_mask as u64));
        let rank = usize::from(self.zipf[(bits as usize) & (ZIPF_TABLE_LEN - 1)]);
        let fresh =
            rank * MARKS + usize::from(MARK_OF[((bits >> ZIPF_TABLE_BITS) & 0xff) as usize]);
        let repeated = usize::from(self.history[self.repeat_from % PHRASE_HISTORY]);
        let repeating = self.repeat_left > 0;
        let piece = if repeating { repeated } else { fresh };
        self.repeat_from += usize::from(repeating);
        self.repeat_left -= u64::from(repeating);
        self.history[self.words % PHRASE_HISTORY] =
            u16::try_from(piece).expect("fewer than 65536 pieces");
        self.words += 1;
        piece
    }

    /// Appends the piece that `bits` draw at `self.pos`, capitalised after a full stop, its
    /// last space turned into a line break past [`WRAP_COLUMN`]. The caller
    /// guarantees [`STEP_ROOM`] bytes of room: each piece is one fixed-size
    /// copy, which is what makes text generation fast.
    #[inline(always)]
    fn step(&mut self, bits: u64, buf: &mut [u8]) {
        let piece = self.next_piece(bits);
        let (rank, mark) = (piece / MARKS, piece % MARKS);
        let (word, word_len) = &self.words_padded[rank];
        let word_len = usize::from(*word_len);
        let len = word_len + MARK_EXTRA[mark];
        let ends_line = mark == Mark::Paragraph as usize;
        self.column = if ends_line { 0 } else { self.column + len };
        let wrap = self.column >= WRAP_COLUMN;
        self.column = if wrap { 0 } else { self.column };
        // Only stores, each of a value computed in registers: reading back
        // bytes just stored would stall the CPU's store forwarding.
        let pos = self.pos;
        buf[pos..pos + PIECE_SLOT].copy_from_slice(word);
        // Bit 5 of a lowercase letter off: its capital.
        buf[pos] = word[0] & !(u8::from(self.capitalize) << CAPITAL_BIT);
        buf[pos + word_len - 1..pos + word_len + 3].copy_from_slice(&MARK_TEXT[mark]);
        // A piece ends with a space, or a line break after a paragraph or
        // past the wrap column.
        buf[pos + len - 1] = if wrap || ends_line { b'\n' } else { b' ' };
        self.pos = pos + len;
        self.capitalize = mark >= Mark::FullStop as usize;
    }
}

/// Random draws made at a time for text: drawing them in a tight loop
/// keeps the generator's state in registers, where the text loop, short of
/// registers, would keep it in memory and wait on it every word.
const DRAW_BATCH: usize = 256;

/// A stream of random 64-bit draws, made [`DRAW_BATCH`] at a time.
struct Draws<'a> {
    rng: &'a mut Xoshiro256PlusPlus,
    batch: [u64; DRAW_BATCH],
    next: usize,
}

impl<'a> Draws<'a> {
    fn new(rng: &'a mut Xoshiro256PlusPlus) -> Self {
        Self {
            rng,
            batch: [0; DRAW_BATCH],
            next: DRAW_BATCH,
        }
    }

    /// The next draw: the same sequence as calling the generator directly.
    #[inline(always)]
    fn next(&mut self) -> u64 {
        if self.next == DRAW_BATCH {
            self.rng.fill_u64s(&mut self.batch);
            self.next = 0;
        }
        self.next += 1;
        self.batch[self.next - 1]
    }
}

/// Writes prose into `buf`.
///
/// The text of a block is the start of one endless stream, whatever the
/// block's length: the words go straight into `buf` while there is
/// [`STEP_ROOM`] to spare, and the last few into a small scratch buffer.
fn fill_text(rng: &mut Xoshiro256PlusPlus, buf: &mut [u8]) {
    let len = buf.len();
    let mut draws = Draws::new(rng);
    let mut writer = TextWriter::new();
    let room_end = len.saturating_sub(STEP_ROOM);
    while writer.pos < room_end {
        writer.step(draws.next(), buf);
    }
    let start = writer.pos;
    if start < len {
        let mut tail = [0u8; 2 * STEP_ROOM];
        writer.pos = 0;
        while writer.pos < len - start {
            writer.step(draws.next(), &mut tail);
        }
        buf[start..].copy_from_slice(&tail[..len - start]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(content: Content, seed: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0xAA; len];
        content.fill_block(seed, 3, 1, &mut buf);
        buf
    }

    /// Shannon entropy of the byte histogram, in bits per byte.
    fn byte_entropy(data: &[u8]) -> f64 {
        let mut counts = [0u64; 256];
        for &b in data {
            counts[usize::from(b)] += 1;
        }
        let n = data.len() as f64;
        counts
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = c as f64 / n;
                -p * p.log2()
            })
            .sum()
    }

    #[test]
    fn names_parse_and_print() {
        for c in [Content::Random, Content::Text, Content::Zeros] {
            assert_eq!(c.to_string().parse::<Content>(), Ok(c));
        }
        assert_eq!("TEXT".parse::<Content>(), Ok(Content::Text));
        let err = "noise".parse::<Content>().unwrap_err();
        assert!(err.to_string().contains("random, text or zeros"), "{err}");
    }

    #[test]
    fn zeros_are_zero() {
        assert!(block(Content::Zeros, 1, 10_000).iter().all(|&b| b == 0));
    }

    #[test]
    fn random_is_incompressible_and_seeded() {
        let a = block(Content::Random, 1, 1 << 20);
        assert!(byte_entropy(&a) > 7.99);
        assert_eq!(a, block(Content::Random, 1, 1 << 20));
        assert_ne!(a, block(Content::Random, 2, 1 << 20));
        // A block of another length starts with the same bytes.
        assert_eq!(&a[..1001], &block(Content::Random, 1, 1001)[..]);
    }

    #[test]
    fn text_looks_like_prose() {
        let text = block(Content::Text, 1, 1 << 20);
        assert!(text
            .iter()
            .all(|&b| b.is_ascii_graphic() || b == b' ' || b == b'\n'));
        // English prose has 4-5 bits of byte entropy; random data has 8.
        let entropy = byte_entropy(&text);
        assert!((3.5..5.0).contains(&entropy), "entropy {entropy}");
        let text = String::from_utf8(text).expect("ASCII");
        let words: Vec<&str> = text.split_whitespace().collect();
        let the = words
            .iter()
            .filter(|w| w.eq_ignore_ascii_case("the"))
            .count();
        let share = the as f64 / words.len() as f64;
        // Zipf's law over the vocabulary gives "the" about 15% of words.
        assert!((0.10..0.20).contains(&share), "share of 'the' {share}");
        assert!(text.contains(". "));
        assert!(text.contains(", "));
        assert!(text.contains("\n\n"));
        let longest = text.lines().map(str::len).max().unwrap_or(0);
        let long = text.lines().find(|l| l.len() == longest).unwrap_or("");
        assert!(
            longest < WRAP_COLUMN + 20,
            "longest line {longest}: {long:?}"
        );
        assert_ne!(text.as_bytes(), &block(Content::Text, 2, 1 << 20)[..]);
        // Any block length gives the start of the same text.
        for len in [0, 1, 63, 64, 65, 1001, 5000, 70_000] {
            assert_eq!(
                &text.as_bytes()[..len],
                &block(Content::Text, 1, len)[..],
                "{len}"
            );
        }
    }

    #[test]
    fn zipf_table_favours_low_ranks() {
        let table = zipf_table();
        assert_eq!(table[0], 0);
        assert_eq!(usize::from(table[ZIPF_TABLE_LEN - 1]), WORDS.len() - 1);
        assert!(table.windows(2).all(|w| w[0] <= w[1]));
    }
}
