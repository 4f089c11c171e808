/*
 * What a reused TurboJPEG decompressor carries from one image to the next, and the
 * means to drop it, so that a decode depends only on the blob's bytes.
 *
 * libjpeg keeps quantization and Huffman tables across images on one decompressor
 * (that is how abbreviated "tables-only" datastreams work), and TurboJPEG keeps the
 * last header's width and height when the next blob turns out to hold no frame. A
 * thread that decodes many blobs on one handle therefore decoded a JPEG without DHT
 * (an MJPEG frame) with the previous image's tables, and junk after SOI as a black
 * image of the previous image's size. Creating a handle per image would fix both, but
 * costs as much as decoding a CIFAR-sized JPEG; so this file reaches into the handle
 * and resets exactly that state before each use.
 *
 * The tables live in libjpeg's permanent pool, which frees nothing before the handle
 * goes. Detached tables are therefore kept aside and handed back when libjpeg next
 * asks that pool for a table's size (a hook on alloc_small): a reset then costs no
 * memory, and the pool's list, which libjpeg searches on every allocation, stays as
 * short as on a handle that is never reset.
 *
 * A header read here stays on the handle (lancefeed_tj_header): tj3DecompressHeader
 * ends with jpeg_abort_decompress, so tj3Decompress8 parsed every header a second
 * time (markers, quantization and Huffman tables: a sixth of a CIFAR-sized decode).
 * On Linux the link wraps jpeg_abort_decompress, and the wrapper skips that one
 * abort; tj3Decompress8 then finds the header read (DSTATE_READY) and decodes from
 * where it stopped, in the same buffer. The reset aborts a header left unused.
 *
 * It also watches the error manager: whether a failure was a libjpeg error (fatal)
 * or only warnings, and whether the data ran out (TurboJPEG's source then inserts an
 * EOI and libjpeg fills the rest with gray, which Pillow calls a truncated image).
 *
 * TurboJPEG's instance struct is private to turbojpeg.c; the prefix below copies it
 * from the vendored libjpeg-turbo 3.1 (turbojpeg-sys pins that version).
 * lancefeed_tj_attach checks the layout against fields it can verify and refuses a
 * handle that does not match; rust/codec/jpeg.rs then falls back to a new handle per
 * image, which is exact too, only slower.
 */

#define JPEG_INTERNALS
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include "jinclude.h"
#include "jpeglib.h"
#include "jerror.h"
#include "turbojpeg.h"

/* turbojpeg.c: struct my_error_mgr and the start of struct _tjinstance. */
struct lf_tj_error_mgr {
  struct jpeg_error_mgr pub;
  jmp_buf setjmp_buffer;
  void (*emit_message) (j_common_ptr, int);
  boolean warning, stopOnWarning;
};

typedef struct {
  struct jpeg_compress_struct cinfo;
  struct jpeg_decompress_struct dinfo;
  struct lf_tj_error_mgr jerr;
  int init;
  char errStr[JMSG_LENGTH_MAX];
  boolean isInstanceError;
  boolean bottomUp;
  boolean noRealloc;
  int quality;
  int subsamp;
  int jpegWidth;
  int jpegHeight;
} lf_tjinstance;

/* turbojpeg.c's `enum { COMPRESS = 1, DECOMPRESS = 2 }`. */
#define LF_TJ_DECOMPRESS  2

/* At most NUM_QUANT_TBLS + 2 * NUM_HUFF_TBLS tables exist on a handle at once. */
#define LF_SPARE  (NUM_QUANT_TBLS + 2 * NUM_HUFF_TBLS)

/* Per handle, in dinfo.client_data (which neither libjpeg nor TurboJPEG uses). */
typedef struct {
  void (*emit_message) (j_common_ptr, int);
  void (*error_exit) (j_common_ptr);
  void *(*alloc_small) (j_common_ptr, int, size_t);
  int failed;       /* a libjpeg error (longjmp) since the last reset */
  int ran_out;      /* the data ended early (JWRN_JPEG_EOF) since the last reset */
  int ended_after;  /* the data ended only after the image's last scanline was output */
  int failed_after; /* a libjpeg error after the last scanline (in the trailing markers) */
  int keep_header;  /* skip tj3DecompressHeader's closing abort (LF_KEEP_HEADER) */
  int spares;       /* detached tables, ready for reuse */
  void *spare[LF_SPARE];
  size_t spare_size[LF_SPARE];
} lf_state;

/* Whether every scanline of the image was output: only its trailing markers are left.
 * Never for a progressive image: another scan may follow the last one read until its
 * EOI says otherwise (Pillow reads it as truncated without one). */
static int
lf_whole(j_common_ptr cinfo)
{
  j_decompress_ptr d = (j_decompress_ptr)cinfo;

  /* output_height and output_scanline keep the previous image's values until the
   * next image's decompression starts: only a decompression under way (or ending)
   * counts, never a header read. */
  return cinfo->is_decompressor && d->global_state >= DSTATE_SCANNING && d->global_state <= DSTATE_STOPPING &&
         !d->progressive_mode && d->output_height > 0 && d->output_scanline >= d->output_height;
}

static void
lf_emit_message(j_common_ptr cinfo, int msg_level)
{
  lf_state *s = (lf_state *)cinfo->client_data;

  if (msg_level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) {
    /* After the last scanline only the trailing markers are left to read (a missing or
     * damaged EOI, say). Pillow never asks for more data there: its image is whole. */
    if (lf_whole(cinfo))
      s->ended_after = 1;
    else
      s->ran_out = 1;
  }
  s->emit_message(cinfo, msg_level);
}

static void
lf_error_exit(j_common_ptr cinfo)
{
  lf_state *s = (lf_state *)cinfo->client_data;

  if (lf_whole(cinfo))
    s->failed_after = 1;
  else
    s->failed = 1;
  s->error_exit(cinfo);   /* longjmps back into TurboJPEG */
}

/* libjpeg's alloc_small, serving a permanent table-sized request from the detached
 * tables first. Only reset detaches, and only tables, so a spare is referenced by
 * nothing; one of the right size in the right pool is as good as a new one. */
static void *
lf_alloc_small(j_common_ptr cinfo, int pool_id, size_t sizeofobject)
{
  lf_state *s = (lf_state *)cinfo->client_data;
  int i;

  if (pool_id == JPOOL_PERMANENT) {
    for (i = s->spares - 1; i >= 0; i--) {
      if (s->spare_size[i] == sizeofobject) {
        void *p = s->spare[i];

        s->spares--;
        s->spare[i] = s->spare[s->spares];
        s->spare_size[i] = s->spare_size[s->spares];
        return p;
      }
    }
  }
  return s->alloc_small(cinfo, pool_id, sizeofobject);
}

static void
lf_detach(lf_state *s, void **slot, size_t size)
{
  if (*slot != NULL && s->spares < LF_SPARE) {
    s->spare[s->spares] = *slot;
    s->spare_size[s->spares] = size;
    s->spares++;
  }
  *slot = NULL;
}

/* Hooks the handle's error manager and memory manager. 0 on success; -1 if the handle is not laid out
 * as this file assumes (then nothing was changed). */
int
lancefeed_tj_attach(tjhandle handle)
{
  lf_tjinstance *t = (lf_tjinstance *)handle;
  lf_state *s;

  if (t == NULL || t->init != LF_TJ_DECOMPRESS || !t->dinfo.is_decompressor ||
      t->dinfo.err != &t->jerr.pub || t->dinfo.client_data != NULL ||
      t->dinfo.global_state != DSTATE_START)
    return -1;
  s = (lf_state *)calloc(1, sizeof(lf_state));
  if (s == NULL)
    return -1;
  s->emit_message = t->jerr.pub.emit_message;
  s->error_exit = t->jerr.pub.error_exit;
  s->alloc_small = t->dinfo.mem->alloc_small;
  t->dinfo.client_data = s;
  t->jerr.pub.emit_message = lf_emit_message;
  t->jerr.pub.error_exit = lf_error_exit;
  t->dinfo.mem->alloc_small = lf_alloc_small;
  return 0;
}

/* Frees what attach allocated; call before tj3Destroy. */
void
lancefeed_tj_detach(tjhandle handle)
{
  lf_tjinstance *t = (lf_tjinstance *)handle;

  free(t->dinfo.client_data);
  t->dinfo.client_data = NULL;
}

/* Puts the handle back to the state of a new one, as far as the next blob can tell:
 * no decode under way, no tables, no header, no error. */
void
lancefeed_tj_reset(tjhandle handle)
{
  lf_tjinstance *t = (lf_tjinstance *)handle;
  j_decompress_ptr d = &t->dinfo;
  lf_state *s = (lf_state *)d->client_data;
  int i;

  /* A header read that failed leaves libjpeg mid-header: the next read would go on
   * parsing the new blob as the rest of the old one. */
  if (d->global_state != DSTATE_START)
    jpeg_abort_decompress(d);
  for (i = 0; i < NUM_QUANT_TBLS; i++)
    lf_detach(s, (void **)&d->quant_tbl_ptrs[i], sizeof(JQUANT_TBL));
  for (i = 0; i < NUM_HUFF_TBLS; i++) {
    lf_detach(s, (void **)&d->dc_huff_tbl_ptrs[i], sizeof(JHUFF_TBL));
    lf_detach(s, (void **)&d->ac_huff_tbl_ptrs[i], sizeof(JHUFF_TBL));
  }
  /* A tables-only stream returns from tj3DecompressHeader before these are set. */
  t->jpegWidth = -1;
  t->jpegHeight = -1;
  s->failed = 0;
  s->ran_out = 0;
  s->ended_after = 0;
  s->failed_after = 0;
}

#ifdef LF_KEEP_HEADER
void __real_jpeg_abort_decompress(j_decompress_ptr cinfo);

/* Every jpeg_abort_decompress in TurboJPEG comes here (the link's --wrap). Handles
 * that are not attached have no client_data. */
void
__wrap_jpeg_abort_decompress(j_decompress_ptr cinfo)
{
  lf_state *s = (lf_state *)cinfo->client_data;

  if (s != NULL && s->keep_header) {
    s->keep_header = 0;
    return;
  }
  __real_jpeg_abort_decompress(cinfo);
}
#endif

/* tj3DecompressHeader, leaving the header read on the handle (where the link allows):
 * the next tj3Decompress8 then decodes this same buffer without reading its header
 * again, and ignores the buffer it is given. Only for attached handles, after a reset. */
int
lancefeed_tj_header(tjhandle handle, const unsigned char *buf, size_t size)
{
  lf_tjinstance *t = (lf_tjinstance *)handle;
  lf_state *s = (lf_state *)t->dinfo.client_data;
  int rc;

#ifdef LF_KEEP_HEADER
  s->keep_header = 1;
#endif
  rc = tj3DecompressHeader(handle, buf, size);
  /* An error (or a tables-only stream) returned before the abort: nothing to keep. */
  s->keep_header = 0;
  return rc;
}

/* After a TurboJPEG call returned -1: bit 0 set if it failed (a libjpeg error or
 * one of TurboJPEG's own) before the image was whole, clear if there were only
 * warnings; bit 1 set if the data ran out (a truncated stream); bit 2 set if libjpeg
 * failed in the trailing markers, after the last scanline (Pillow refuses such a file,
 * or with LOAD_TRUNCATED_IMAGES returns its whole image). Data that ran out after the
 * last scanline is none of these: libjpeg then reads the end-of-image marker it made up
 * in its place, and what goes wrong from there (a DQT cut short reads it as table
 * bytes) is of its own making. */
int
lancefeed_tj_status(tjhandle handle)
{
  lf_tjinstance *t = (lf_tjinstance *)handle;
  lf_state *s = (lf_state *)t->dinfo.client_data;

  if (s->ended_after && !s->ran_out && !s->failed && !t->isInstanceError)
    return 0;
  return ((s->failed || t->isInstanceError) ? 1 : 0) | (s->ran_out ? 2 : 0) | (s->failed_after ? 4 : 0);
}
