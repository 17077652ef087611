/**
 * A minimal Parquet writer for test fixtures (hyparquet only reads): one row group, required columns of UTF-8
 * strings or 64-bit integers, PLAIN encoding, no compression, one data page per column. Written from the
 * Apache Parquet format spec (parquet.thrift: FileMetaData, SchemaElement, RowGroup, ColumnChunk,
 * ColumnMetaData, PageHeader, DataPageHeader) with Thrift's compact protocol; a required column at the top level
 * has no repetition or definition levels, so a page is just the PLAIN values.
 */
import { writeFileSync } from 'node:fs';

type Column = { name: string; values: string[] } | { name: string; values: bigint[] };

// Thrift compact protocol type ids.
const I32 = 5;
const I64 = 6;
const BINARY = 8;
const LIST = 9;
const STRUCT = 12;

class CompactWriter {
  bytes: number[] = [];
  private last: number[] = [0];

  private varint(n: bigint): void {
    let v = n;
    while (v >= 0x80n) {
      this.bytes.push(Number((v & 0x7fn) | 0x80n));
      v >>= 7n;
    }
    this.bytes.push(Number(v));
  }
  private zigzag(n: bigint): void {
    this.varint(n >= 0n ? n << 1n : (-n << 1n) - 1n);
  }
  private header(id: number, type: number): void {
    const delta = id - this.last[this.last.length - 1]!;
    if (delta > 0 && delta <= 15) this.bytes.push((delta << 4) | type);
    else {
      this.bytes.push(type);
      this.zigzag(BigInt(id));
    }
    this.last[this.last.length - 1] = id;
  }
  i32(id: number, v: number): this {
    this.header(id, I32);
    this.zigzag(BigInt(v));
    return this;
  }
  i64(id: number, v: number | bigint): this {
    this.header(id, I64);
    this.zigzag(BigInt(v));
    return this;
  }
  private binaryValue(b: Uint8Array): void {
    this.varint(BigInt(b.length));
    this.bytes.push(...b);
  }
  string(id: number, s: string): this {
    this.header(id, BINARY);
    this.binaryValue(Buffer.from(s, 'utf8'));
    return this;
  }
  private listHeader(id: number, size: number, elem: number): void {
    this.header(id, LIST);
    if (size < 15) this.bytes.push((size << 4) | elem);
    else {
      this.bytes.push(0xf0 | elem);
      this.varint(BigInt(size));
    }
  }
  i32List(id: number, vs: number[]): this {
    this.listHeader(id, vs.length, I32);
    for (const v of vs) this.zigzag(BigInt(v));
    return this;
  }
  stringList(id: number, vs: string[]): this {
    this.listHeader(id, vs.length, BINARY);
    for (const v of vs) this.binaryValue(Buffer.from(v, 'utf8'));
    return this;
  }
  structList<T>(id: number, items: T[], write: (w: this, item: T) => void): this {
    this.listHeader(id, items.length, STRUCT);
    for (const it of items) {
      this.last.push(0);
      write(this, it);
      this.bytes.push(0);
      this.last.pop();
    }
    return this;
  }
  struct(id: number, write: (w: this) => void): this {
    this.header(id, STRUCT);
    this.last.push(0);
    write(this);
    this.bytes.push(0);
    this.last.pop();
    return this;
  }
  end(): Buffer {
    this.bytes.push(0);
    return Buffer.from(this.bytes);
  }
}

function plainValues(col: Column): Buffer {
  const parts: Buffer[] = [];
  for (const v of col.values) {
    if (typeof v === 'bigint') {
      const b = Buffer.alloc(8);
      b.writeBigInt64LE(v);
      parts.push(b);
    } else {
      const s = Buffer.from(v, 'utf8');
      const len = Buffer.alloc(4);
      len.writeUInt32LE(s.length);
      parts.push(len, s);
    }
  }
  return Buffer.concat(parts);
}

const isInt = (c: Column) => typeof c.values[0] === 'bigint';

/** Writes `columns` (all of the same length) as a Parquet file. */
export function writeParquet(path: string, columns: Column[]): void {
  const rows = columns[0]!.values.length;
  const chunks: Buffer[] = [Buffer.from('PAR1')];
  let offset = 4;
  const meta: { col: Column; offset: number; size: number }[] = [];
  for (const col of columns) {
    const data = plainValues(col);
    const header = new CompactWriter()
      .i32(1, 0) // DATA_PAGE
      .i32(2, data.length)
      .i32(3, data.length)
      .struct(5, (w) => w.i32(1, rows).i32(2, 0).i32(3, 3).i32(4, 3)) // PLAIN values, RLE levels
      .end();
    chunks.push(header, data);
    meta.push({ col, offset, size: header.length + data.length });
    offset += header.length + data.length;
  }
  const footer = new CompactWriter()
    .i32(1, 1)
    .structList(2, [null, ...columns], (w, c) => {
      if (c === null) w.string(4, 'schema').i32(5, columns.length);
      else {
        w.i32(1, isInt(c) ? 2 : 6)
          .i32(3, 0)
          .string(4, c.name); // INT64 | BYTE_ARRAY, REQUIRED
        if (!isInt(c)) w.i32(6, 0); // converted type UTF8
      }
    })
    .i64(3, rows)
    .structList(4, [meta], (w, m) =>
      w
        .structList(1, m, (cw, c) =>
          cw.i64(2, c.offset).struct(3, (mw) =>
            mw
              .i32(1, isInt(c.col) ? 2 : 6)
              .i32List(2, [0, 3])
              .stringList(3, [c.col.name])
              .i32(4, 0) // UNCOMPRESSED
              .i64(5, rows)
              .i64(6, c.size)
              .i64(7, c.size)
              .i64(9, c.offset),
          ),
        )
        .i64(
          2,
          m.reduce((a, c) => a + c.size, 0),
        )
        .i64(3, rows),
    )
    .string(6, 'moka test parquet-writer')
    .end();
  const len = Buffer.alloc(4);
  len.writeUInt32LE(footer.length);
  chunks.push(footer, len, Buffer.from('PAR1'));
  writeFileSync(path, Buffer.concat(chunks));
}
