// CLIP's byte-level BPE, as Hugging Face's CLIPTokenizer runs it: added tokens (the special ones, SD 2's "!" pad)
// cut out verbatim first; the rest NFC, whitespace collapsed, lowercase, split by CLIP's pattern; each piece's
// UTF-8 bytes as GPT-2's printable characters; merges by rank with the end-of-word mark on the last symbol; then
// BOS, at most max_length - 2 tokens, EOS, and padding to max_length.
const PATTERN = /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+/gu;

function byteCharacters() {
  const printable = [[33, 126], [161, 172], [174, 255]].flatMap(([a, b]) => [...Array(b - a + 1).keys()].map((i) => a + i));
  let extra = 256;
  return [...Array(256).keys()].map((b) => String.fromCodePoint(printable.includes(b) ? b : extra++));
}

export class Tokenizer {
  constructor(spec) {
    this.spec = spec; // {vocab, merges, added, end_of_word, bos, eos, pad, unk, max_length, input}
    this.vocab = new Map(Object.entries(spec.vocab));
    const added = Object.keys(spec.added).sort((a, b) => b.length - a.length);
    const escaped = added.map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
    this.added = added.length ? new RegExp(`(${escaped.join("|")})`) : /(?!)/;
    this.ranks = new Map(spec.merges.map(([a, b], rank) => [`${a} ${b}`, rank]));
    this.bytes = byteCharacters();
    this.utf8 = new TextEncoder();
  }

  bpe(word) {
    let parts = Array.from(word);
    parts[parts.length - 1] += this.spec.end_of_word;
    for (;;) {
      let best = Infinity;
      for (let i = 0; i + 1 < parts.length; i++) best = Math.min(best, this.ranks.get(`${parts[i]} ${parts[i + 1]}`) ?? Infinity);
      if (best === Infinity) return parts;
      const merged = [];
      for (let i = 0; i < parts.length; i++) {
        const joins = i + 1 < parts.length && this.ranks.get(`${parts[i]} ${parts[i + 1]}`) === best;
        merged.push(joins ? parts[i] + parts[++i] : parts[i]);
      }
      parts = merged;
    }
  }

  encode(text) {
    const { bos, eos, pad, unk, max_length: length, added } = this.spec;
    const ids = [];
    // split() with a capturing group alternates text and added tokens: odd indices are the added ones
    text.split(this.added).forEach((segment, i) => {
      if (i % 2) return ids.push(added[segment]);
      for (const [piece] of segment.normalize("NFC").replace(/\s+/g, " ").toLowerCase().matchAll(PATTERN)) {
        const chars = Array.from(this.utf8.encode(piece), (b) => this.bytes[b]).join("");
        for (const token of this.bpe(chars)) ids.push(this.vocab.get(token) ?? unk);
      }
    });
    const body = ids.slice(0, length - 2);
    return [bos, ...body, eos, ...Array(length - body.length - 2).fill(pad)];
  }
}
