/*
 * libjpeg-turbo's sequential Huffman decoder (jdhuff.c, included whole) with one
 * more fast path: a lookup on the next LF_BITS bits of the stream that yields the
 * code's zero run and its coefficient at once, magnitude bits included.
 *
 * libjpeg-turbo looks up the code (8 bits) and then reads the magnitude bits, sign
 * extends them, and stores: two dependent steps per coefficient, most of a training
 * decode's time. Where a code and its magnitude fit in LF_BITS bits (nearly all of
 * them in photographs) this takes one step; the rest, and every corner (markers,
 * the MCU before a restart, suspension, corrupt data), stays on libjpeg-turbo's own paths, so the
 * coefficients are the same bytes for valid and invalid streams alike.
 *
 * Small images (CIFAR-10's 32x32) get two things instead: the derived tables of a
 * Huffman table this thread built before are copied rather than rebuilt (most JPEGs
 * carry the same tables), and libjpeg-turbo's byte-wise fast path is taken where the
 * stream ends with a marker, which it cannot read past.
 *
 * build.rs compiles this once, for x86-64-v3, with jdhuff.c's globals renamed; it
 * exports libjpeg-turbo's decoder as lancefeed_v3_jinit_huff_decoder and this one as
 * lancefeed_v3_jinit_table_huff_decoder. rust/codec/huffman.rs chooses per CPU.
 *
 * jdhuff.c: Copyright (C) 1991-1997, Thomas G. Lane; libjpeg-turbo modifications,
 * D. R. Commander and contributors; under the IJG license (README.ijg in
 * libjpeg-turbo's sources, which turbojpeg-sys vendors). The additions below follow
 * its structure.
 */

#include "jdhuff.c"

#define LF_BITS  10
#define LF_SIZE  (1 << LF_BITS)
/* Entry: bits 0-4 the bits it consumes (0: not in the table, take the slow path),
 * bit 5 end of block, bits 8-11 the zero run before the coefficient, bits 16-31
 * the coefficient (signed). */
#define LF_LEN_MASK  31
#define LF_EOB  32

/* Below this many MCUs libjpeg-turbo's path is used: building the tables (~6 us an
 * image) costs more than a small image's decode saves (measured: break-even at ~60
 * MCUs, 8% faster from ~150; a CIFAR-10 image has 4). */
#define LF_MIN_MCUS  96

/* FILL_BIT_BUFFER_FAST, with the six bytes read at once where none is 0xFF (the
 * caller guarantees BUFSIZE bytes per block, so the 8-byte load stays inside). */
#define LF_FILL \
  if (bits_left <= 16) { \
    unsigned long long w_; \
    memcpy(&w_, buffer, 8); \
    w_ = __builtin_bswap64(w_) >> 16; \
    if (!lf_has_ff(w_)) { \
      get_buffer = (get_buffer << 48) | w_; \
      bits_left += 48; \
      buffer += 6; \
    } else { \
      GET_BYTE GET_BYTE GET_BYTE GET_BYTE GET_BYTE GET_BYTE \
    } \
  }

/* jdhuff.c's GET_BYTE, counting in lf_marks the times it met a marker and fed eight
 * zero bits instead of data: with that count, lf_decode_mcu_fast can tell an MCU that
 * ended before the marker (every MCU of a stream with a marker after each) from one
 * that read into the zeros. The macros expanded in this file from here on use it. */
#undef GET_BYTE
#define GET_BYTE { \
  register int c0, c1; \
  c0 = *buffer++; \
  c1 = *buffer; \
  get_buffer = (get_buffer << 8) | c0; \
  bits_left += 8; \
  if (c0 == 0xFF) { \
    buffer++; \
    if (c1 != 0) { \
      cinfo->unread_marker = c1; \
      buffer -= 2; \
      get_buffer &= ~0xFF; \
      lf_marks++; \
    } \
  } \
}

/* Whether any of the low six bytes of w is 0xFF. */
static inline int
lf_has_ff(unsigned long long w)
{
  unsigned long long x = ~w & 0xFFFFFFFFFFFFULL;
  return ((x - 0x010101010101ULL) & ~x & 0x808080808080ULL) != 0;
}

/* The derived tables (jdhuff.c's code lookup) of the last Huffman tables this thread
 * decoded with, by content. Every JPEG carries its tables and most encoders write the
 * same ones (the standard tables, or one encoder's), so a decode rebuilt the same four
 * tables for each image: ~2 us, 15% of a CIFAR-10 image's decode. A table with the same
 * bits and symbols has the same derived table, so it is copied instead. */
#define LF_CACHED_TABLES  8

typedef struct {
  int used;
  boolean isDC, lossless;
  UINT8 bits[17];
  UINT8 huffval[256];
  d_derived_tbl derived;
} lf_cached_table;

static __thread lf_cached_table lf_cached[LF_CACHED_TABLES];
static __thread unsigned int lf_cached_next;

/* jpeg_make_d_derived_tbl, from the cache when this thread built the same table
 * before; validation is content's, so a table found here passed it. */
LOCAL(void)
lf_make_d_derived_tbl(j_decompress_ptr cinfo, boolean isDC, int tblno,
                      d_derived_tbl **pdtbl)
{
  JHUFF_TBL *htbl = NULL;
  boolean lossless = cinfo->master->lossless;
  int i, n = 0;

  if (tblno >= 0 && tblno < NUM_HUFF_TBLS)
    htbl = isDC ? cinfo->dc_huff_tbl_ptrs[tblno] : cinfo->ac_huff_tbl_ptrs[tblno];
  if (htbl != NULL) {
    for (i = 1; i <= 16; i++)
      n += htbl->bits[i];
    for (i = 0; n <= 256 && i < LF_CACHED_TABLES; i++) {
      lf_cached_table *c = &lf_cached[i];
      if (c->used && c->isDC == isDC && c->lossless == lossless &&
          memcmp(c->bits, htbl->bits, sizeof(c->bits)) == 0 &&
          memcmp(c->huffval, htbl->huffval, n) == 0) {
        if (*pdtbl == NULL)
          *pdtbl = (d_derived_tbl *)
            (*cinfo->mem->alloc_small) ((j_common_ptr)cinfo, JPOOL_IMAGE,
                                        sizeof(d_derived_tbl));
        memcpy(*pdtbl, &c->derived, sizeof(d_derived_tbl));
        (*pdtbl)->pub = htbl;
        return;
      }
    }
  }
  /* Validates the table, or exits through libjpeg's error handler. */
  jpeg_make_d_derived_tbl(cinfo, isDC, tblno, pdtbl);
  if (htbl != NULL && n <= 256) {
    lf_cached_table *c = &lf_cached[lf_cached_next++ % LF_CACHED_TABLES];
    c->used = 1;
    c->isDC = isDC;
    c->lossless = lossless;
    memcpy(c->bits, htbl->bits, sizeof(c->bits));
    memcpy(c->huffval, htbl->huffval, n);
    memcpy(&c->derived, *pdtbl, sizeof(d_derived_tbl));
  }
}

/* jdhuff.c's start_pass_huff_decoder, with the derived tables from the cache. */
LOCAL(void)
lf_start_pass_huff_decoder(j_decompress_ptr cinfo)
{
  huff_entropy_ptr entropy = (huff_entropy_ptr)cinfo->entropy;
  int ci, blkn, dctbl, actbl;
  jpeg_component_info *compptr;

  if (cinfo->Ss != 0 || cinfo->Se != DCTSIZE2 - 1 ||
      cinfo->Ah != 0 || cinfo->Al != 0)
    WARNMS(cinfo, JWRN_NOT_SEQUENTIAL);

  for (ci = 0; ci < cinfo->comps_in_scan; ci++) {
    compptr = cinfo->cur_comp_info[ci];
    dctbl = compptr->dc_tbl_no;
    actbl = compptr->ac_tbl_no;
    lf_make_d_derived_tbl(cinfo, TRUE, dctbl, entropy->dc_derived_tbls + dctbl);
    lf_make_d_derived_tbl(cinfo, FALSE, actbl, entropy->ac_derived_tbls + actbl);
    entropy->saved.last_dc_val[ci] = 0;
  }

  for (blkn = 0; blkn < cinfo->blocks_in_MCU; blkn++) {
    ci = cinfo->MCU_membership[blkn];
    compptr = cinfo->cur_comp_info[ci];
    entropy->dc_cur_tbls[blkn] = entropy->dc_derived_tbls[compptr->dc_tbl_no];
    entropy->ac_cur_tbls[blkn] = entropy->ac_derived_tbls[compptr->ac_tbl_no];
    if (compptr->component_needed) {
      entropy->dc_needed[blkn] = TRUE;
      entropy->ac_needed[blkn] = (compptr->_DCT_scaled_size > 1);
    } else {
      entropy->dc_needed[blkn] = entropy->ac_needed[blkn] = FALSE;
    }
  }

  entropy->bitstate.bits_left = 0;
  entropy->bitstate.get_buffer = 0;
  entropy->pub.insufficient_data = FALSE;
  entropy->restarts_to_go = cinfo->restart_interval;
}


typedef struct {
  huff_entropy_decoder base;    /* first, so that libjpeg's casts hold */
  int *tables[2][NUM_HUFF_TBLS];  /* [DC, AC][table number], image lifespan */
  const int *dc_fast[D_MAX_BLOCKS_IN_MCU];
  const int *ac_fast[D_MAX_BLOCKS_IN_MCU];
} lf_entropy_decoder;

typedef lf_entropy_decoder *lf_entropy_ptr;


/* Fills `fast` from a table that jpeg_make_d_derived_tbl has already validated. */
LOCAL(void)
lf_build_table(const JHUFF_TBL *htbl, boolean isDC, int *fast)
{
  int l, i, p = 0;
  unsigned int code = 0;

  memset(fast, 0, LF_SIZE * sizeof(int));
  for (l = 1; l <= LF_BITS; l++) {
    for (i = 0; i < htbl->bits[l]; i++, p++, code++) {
      int sym = htbl->huffval[p];
      int run = isDC ? 0 : sym >> 4;
      int size = isDC ? sym : sym & 15;
      int spare = LF_BITS - l - size;
      unsigned int first = code << (LF_BITS - l);
      int m, t;

      if (size == 0) {
        if (isDC) {               /* a zero difference */
          for (t = 0; t < 1 << (LF_BITS - l); t++)
            fast[first + t] = l;
        } else if (run != 15) {   /* end of block (libjpeg-turbo ends on any run) */
          for (t = 0; t < 1 << (LF_BITS - l); t++)
            fast[first + t] = l | LF_EOB;
        }                         /* ZRL stays on the slow path */
        continue;
      }
      if (spare < 0)
        continue;
      for (m = 0; m < 1 << size; m++) {
        int v = m < 1 << (size - 1) ? m - (1 << size) + 1 : m;
        int entry = v * 65536 + run * 256 + l + size;
        unsigned int base = first | ((unsigned int)m << spare);
        for (t = 0; t < 1 << spare; t++)
          fast[base + t] = entry;
      }
    }
    code <<= 1;
  }
}


LOCAL(int *)
lf_table(j_decompress_ptr cinfo, boolean isDC, int tblno)
{
  lf_entropy_ptr lf = (lf_entropy_ptr)cinfo->entropy;
  int **slot = &lf->tables[isDC ? 0 : 1][tblno];

  if (*slot == NULL)
    *slot = (int *)(*cinfo->mem->alloc_small) ((j_common_ptr)cinfo, JPOOL_IMAGE,
                                               LF_SIZE * sizeof(int));
  return *slot;
}


METHODDEF(boolean) lf_decode_mcu(j_decompress_ptr cinfo, JBLOCKROW *MCU_data);
METHODDEF(boolean) lf_decode_mcu_small(j_decompress_ptr cinfo, JBLOCKROW *MCU_data);

METHODDEF(void)
lf_start_pass(j_decompress_ptr cinfo)
{
  lf_entropy_ptr lf = (lf_entropy_ptr)cinfo->entropy;
  boolean built[2][NUM_HUFF_TBLS] = { { FALSE } };
  int ci, blkn;

  /* Validates the tables and sets libjpeg-turbo's state; ours comes on top. */
  lf_start_pass_huff_decoder(cinfo);
  lf->base.pub.decode_mcu = lf_decode_mcu_small;
  if ((long)cinfo->MCUs_per_row * (long)cinfo->MCU_rows_in_scan < LF_MIN_MCUS)
    return;

  for (ci = 0; ci < cinfo->comps_in_scan; ci++) {
    jpeg_component_info *compptr = cinfo->cur_comp_info[ci];
    int dc = compptr->dc_tbl_no, ac = compptr->ac_tbl_no;
    /* A table may change between scans (DHT), so each scan builds its own. */
    if (!built[0][dc]) {
      lf_build_table(cinfo->dc_huff_tbl_ptrs[dc], TRUE, lf_table(cinfo, TRUE, dc));
      built[0][dc] = TRUE;
    }
    if (!built[1][ac]) {
      lf_build_table(cinfo->ac_huff_tbl_ptrs[ac], FALSE, lf_table(cinfo, FALSE, ac));
      built[1][ac] = TRUE;
    }
  }
  for (blkn = 0; blkn < cinfo->blocks_in_MCU; blkn++) {
    jpeg_component_info *compptr =
      cinfo->cur_comp_info[cinfo->MCU_membership[blkn]];
    lf->dc_fast[blkn] = lf->tables[0][compptr->dc_tbl_no];
    lf->ac_fast[blkn] = lf->tables[1][compptr->ac_tbl_no];
  }
  lf->base.pub.decode_mcu = lf_decode_mcu;
}


/* The DC difference s of block blkn made a coefficient (where the component is
 * needed) and, with the saved state, the MCU's end: what both fast paths below
 * share with jdhuff.c's decode_mcu_fast. */
#define LF_STORE_DC \
  if (entropy->dc_needed[blkn]) { \
    int ci = cinfo->MCU_membership[blkn]; \
    s += state.last_dc_val[ci]; \
    state.last_dc_val[ci] = s; \
    if (block) \
      (*block)[0] = (JCOEF)s; \
  }

#define LF_SAVE_MCU \
  br_state.bytes_in_buffer -= (buffer - br_state.next_input_byte); \
  br_state.next_input_byte = buffer; \
  BITREAD_SAVE_STATE(cinfo, entropy->bitstate); \
  entropy->saved = state;

/* The AC coefficients of one block; `store` puts coefficient s at zigzag index k, or
 * is nothing where they are skipped (the unused sign extension compiles away). The
 * extra entries of jpeg_natural_order[] absorb k >= DCTSIZE2 from corrupt data, as
 * in libjpeg-turbo. */
#define LF_DECODE_AC(store) \
  for (k = 1; k < DCTSIZE2; k++) { \
    LF_FILL \
    e = acfast[PEEK_BITS(LF_BITS)]; \
    if (e & LF_LEN_MASK) { \
      DROP_BITS(e & LF_LEN_MASK); \
      if (e & LF_EOB) \
        break; \
      k += (e >> 8) & 15; \
      s = e >> 16; \
      store; \
      continue; \
    } \
    HUFF_DECODE_FAST(s, l, actbl); \
    r = s >> 4; \
    s &= 15; \
    if (s) { \
      k += r; \
      LF_FILL \
      r = GET_BITS(s); \
      s = HUFF_EXTEND(r, s); \
      store; \
    } else { \
      if (r != 15) break; \
      k += 15; \
    } \
  }

/* decode_mcu_fast with the table lookup in front of each code. Same contract: the
 * caller checked that enough bytes remain; a marker met on the way makes it return
 * FALSE with the permanent state untouched, and the MCU is decoded again slowly.
 * One exception: the RSTn that ends this MCU's restart interval, when the MCU's bits
 * all came before it (none of the zeros fed after the marker was read). The MCU is
 * then complete, and the state is left as the slow path leaves it: past the marker,
 * the marker unread, the padding bits in the buffer (process_restart drops them). */
LOCAL(boolean)
lf_decode_mcu_fast(j_decompress_ptr cinfo, JBLOCKROW *MCU_data)
{
  lf_entropy_ptr lf = (lf_entropy_ptr)cinfo->entropy;
  huff_entropy_ptr entropy = &lf->base;
  BITREAD_STATE_VARS;
  JOCTET *buffer;
  int blkn;
  savable_state state;
  int lf_marks = 0;

  BITREAD_LOAD_STATE(cinfo, entropy->bitstate);
  buffer = (JOCTET *)br_state.next_input_byte;
  state = entropy->saved;

  for (blkn = 0; blkn < cinfo->blocks_in_MCU; blkn++) {
    JBLOCKROW block = MCU_data ? MCU_data[blkn] : NULL;
    d_derived_tbl *dctbl = entropy->dc_cur_tbls[blkn];
    d_derived_tbl *actbl = entropy->ac_cur_tbls[blkn];
    const int *dcfast = lf->dc_fast[blkn];
    const int *acfast = lf->ac_fast[blkn];
    register int s, k, r, l, e;

    LF_FILL
    e = dcfast[PEEK_BITS(LF_BITS)];
    if (e & LF_LEN_MASK) {
      DROP_BITS(e & LF_LEN_MASK);
      s = e >> 16;
    } else {
      HUFF_DECODE_FAST(s, l, dctbl);
      if (s) {
        LF_FILL
        r = GET_BITS(s);
        s = HUFF_EXTEND(r, s);
      }
    }

    LF_STORE_DC

    if (entropy->ac_needed[blkn] && block) {
      LF_DECODE_AC((*block)[jpeg_natural_order[k]] = (JCOEF)s)
    } else {
      LF_DECODE_AC((void)0)
    }
  }

  if (cinfo->unread_marker != 0) {
    if (cinfo->restart_interval && entropy->restarts_to_go == 1 &&
        cinfo->unread_marker >= 0xD0 && cinfo->unread_marker <= 0xD7 &&
        bits_left >= 8 * lf_marks) {
      bits_left -= 8 * lf_marks;
      buffer += 2;
    } else {
      cinfo->unread_marker = 0;
      return FALSE;
    }
  }

  LF_SAVE_MCU
  return TRUE;
}


/* Whether the source's bytes end with a marker (a whole JPEG in memory ends with its
 * EOI). jdhuff.c's fast path reads byte by byte and stops at the first marker without
 * passing it, so on such a buffer it cannot read past the end however few bytes remain;
 * libjpeg-turbo asks for BUFSIZE bytes per block instead, which no image of a few
 * hundred bytes (CIFAR-10's) has, so all of its MCUs took the slow path. */
LOCAL(boolean)
lf_ends_with_marker(j_decompress_ptr cinfo)
{
  size_t n = cinfo->src->bytes_in_buffer;
  const JOCTET *end = cinfo->src->next_input_byte + n;

  return n >= 2 && end[-2] == 0xFF && end[-1] != 0;
}


/* Whether the source's bytes end with a marker and then LF_PAD zero bytes (the cut-down
 * JPEGs of restart.rs's `slice` end so). lf_decode_mcu_fast stops at the first marker,
 * as jdhuff.c's fast path does, but its refill loads 8 bytes at a time, reading up to
 * 7 bytes past the one it is on: the padding keeps those loads inside the buffer, so
 * the fast path is safe to the end. Without it the last BUFSIZE bytes per block
 * (3 KB of a 4:2:0 stream) went the slow way: a tenth of a 224-pixel crop's MCUs. */
#define LF_PAD  8

LOCAL(boolean)
lf_ends_with_padded_marker(j_decompress_ptr cinfo)
{
  size_t n = cinfo->src->bytes_in_buffer, i;
  const JOCTET *end = cinfo->src->next_input_byte + n;

  if (n < LF_PAD + 2 || end[-LF_PAD - 2] != 0xFF || end[-LF_PAD - 1] == 0 ||
      end[-LF_PAD - 1] == 0xFF)
    return FALSE;
  for (i = 1; i <= LF_PAD; i++)
    if (end[-(long)i] != 0)
      return FALSE;
  return TRUE;
}


/* jdhuff.c's decode_mcu_fast, which gives up on an MCU that met a marker: the last
 * MCU of every image did (its six-byte refills read up to the EOI), and was decoded
 * again by the slow path: one MCU in four of a CIFAR-10 image. This one keeps an MCU
 * whose bits all came before the marker (none of the zeros fed after it used) and
 * leaves the state as the slow path then does: past the marker, the marker unread,
 * the bits before it in the buffer. A marker reached through fill bytes (0xFF 0xFF)
 * still gives up, as GET_BYTE cannot tell its code. */
LOCAL(boolean)
lf_decode_mcu_fast_small(j_decompress_ptr cinfo, JBLOCKROW *MCU_data)
{
  huff_entropy_ptr entropy = (huff_entropy_ptr)cinfo->entropy;
  BITREAD_STATE_VARS;
  JOCTET *buffer;
  int blkn;
  savable_state state;
  int lf_marks = 0;

  BITREAD_LOAD_STATE(cinfo, entropy->bitstate);
  buffer = (JOCTET *)br_state.next_input_byte;
  state = entropy->saved;

  for (blkn = 0; blkn < cinfo->blocks_in_MCU; blkn++) {
    JBLOCKROW block = MCU_data ? MCU_data[blkn] : NULL;
    d_derived_tbl *dctbl = entropy->dc_cur_tbls[blkn];
    d_derived_tbl *actbl = entropy->ac_cur_tbls[blkn];
    register int s, k, r, l;

    HUFF_DECODE_FAST(s, l, dctbl);
    if (s) {
      FILL_BIT_BUFFER_FAST
      r = GET_BITS(s);
      s = HUFF_EXTEND(r, s);
    }

    LF_STORE_DC

    if (entropy->ac_needed[blkn] && block) {
      for (k = 1; k < DCTSIZE2; k++) {
        HUFF_DECODE_FAST(s, l, actbl);
        r = s >> 4;
        s &= 15;
        if (s) {
          k += r;
          FILL_BIT_BUFFER_FAST
          r = GET_BITS(s);
          s = HUFF_EXTEND(r, s);
          (*block)[jpeg_natural_order[k]] = (JCOEF)s;
        } else {
          if (r != 15) break;
          k += 15;
        }
      }
    } else {
      for (k = 1; k < DCTSIZE2; k++) {
        HUFF_DECODE_FAST(s, l, actbl);
        r = s >> 4;
        s &= 15;
        if (s) {
          k += r;
          FILL_BIT_BUFFER_FAST
          DROP_BITS(s);
        } else {
          if (r != 15) break;
          k += 15;
        }
      }
    }
  }

  if (cinfo->unread_marker != 0) {
    if (cinfo->unread_marker != 0xFF && lf_marks < 8 && bits_left >= 8 * lf_marks) {
      get_buffer >>= 8 * lf_marks;
      bits_left -= 8 * lf_marks;
      buffer += 2;
    } else {
      cinfo->unread_marker = 0;
      return FALSE;
    }
  }

  LF_SAVE_MCU
  return TRUE;
}


/* jdhuff.c's decode_mcu for images too small for the tables (LF_MIN_MCUS), with its
 * fast path also taken where the stream ends with a marker (above). */
METHODDEF(boolean)
lf_decode_mcu_small(j_decompress_ptr cinfo, JBLOCKROW *MCU_data)
{
  huff_entropy_ptr entropy = (huff_entropy_ptr)cinfo->entropy;
  int usefast = 1;

  if (cinfo->restart_interval) {
    if (entropy->restarts_to_go == 0)
      if (!process_restart(cinfo))
        return FALSE;
    usefast = 0;
  }

  if ((cinfo->src->bytes_in_buffer < BUFSIZE * (size_t)cinfo->blocks_in_MCU &&
       !lf_ends_with_marker(cinfo)) || cinfo->unread_marker != 0)
    usefast = 0;

  if (!entropy->pub.insufficient_data) {
    if (usefast) {
      if (!lf_decode_mcu_fast_small(cinfo, MCU_data)) goto use_slow;
    } else {
use_slow:
      if (!decode_mcu_slow(cinfo, MCU_data)) return FALSE;
    }
  }

  if (cinfo->restart_interval)
    entropy->restarts_to_go--;

  return TRUE;
}


/* decode_mcu, with lf_decode_mcu_fast as its fast path. */
METHODDEF(boolean)
lf_decode_mcu(j_decompress_ptr cinfo, JBLOCKROW *MCU_data)
{
  huff_entropy_ptr entropy = (huff_entropy_ptr)cinfo->entropy;
  int usefast = 1;

  /* libjpeg-turbo takes its slow path for every MCU of a stream with restart markers.
   * The fast path needs no such care: the restart itself is processed here, before
   * either path, and the fast path accepts the marker that ends the MCU's interval
   * (above). So restart-indexed JPEGs (restart.rs: a marker after every MCU) keep it. */
  if (cinfo->restart_interval) {
    if (entropy->restarts_to_go == 0)
      if (!process_restart(cinfo))
        return FALSE;
  }

  if ((cinfo->src->bytes_in_buffer < BUFSIZE * (size_t)cinfo->blocks_in_MCU &&
       !lf_ends_with_padded_marker(cinfo)) || cinfo->unread_marker != 0)
    usefast = 0;

  if (!entropy->pub.insufficient_data) {
    if (usefast) {
      if (!lf_decode_mcu_fast(cinfo, MCU_data)) goto use_slow;
    } else {
use_slow:
      if (!decode_mcu_slow(cinfo, MCU_data)) return FALSE;
    }
  }

  if (cinfo->restart_interval)
    entropy->restarts_to_go--;

  return TRUE;
}


GLOBAL(void)
lancefeed_v3_jinit_table_huff_decoder(j_decompress_ptr cinfo)
{
  lf_entropy_ptr lf;
  int i;

  std_huff_tables((j_common_ptr)cinfo);
  lf = (lf_entropy_ptr)
    (*cinfo->mem->alloc_small) ((j_common_ptr)cinfo, JPOOL_IMAGE,
                                sizeof(lf_entropy_decoder));
  cinfo->entropy = (struct jpeg_entropy_decoder *)lf;
  lf->base.pub.start_pass = lf_start_pass;
  lf->base.pub.decode_mcu = decode_mcu;
  for (i = 0; i < NUM_HUFF_TBLS; i++) {
    lf->base.dc_derived_tbls[i] = lf->base.ac_derived_tbls[i] = NULL;
    lf->tables[0][i] = lf->tables[1][i] = NULL;
  }
}
