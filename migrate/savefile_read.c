/*
 * Reading a save file.  The file comes from outside: every offset, length,
 * count and checksum is checked before it is used, and each problem gets
 * its own message naming the file and the byte where it was found, so that
 * "truncated", "corrupt", "foreign" and "from another version" can be told
 * apart.  Sections must come in the order the writer puts them; a section
 * of unknown type is skipped only when it is marked OPTIONAL.
 */
#include "savefile.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "../core/util.h"

int sf_errwrap(int rc, const char *fmt, ...)
{
	char prefix[512], msg[512];
	va_list ap;

	snprintf(msg, sizeof(msg), "%s", ferr_msg(rc));
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	return ferr(rc, "%s: %s", prefix, msg);
}

static pthread_once_t zero_once = PTHREAD_ONCE_INIT;
static uint64_t zero_csum, zero_piece_csum;

static void compute_zero_csum(void)
{
	static const uint8_t piece[SF_PIECE_SIZE];
	XXH3_state_t *s = XXH3_createState();

	/* Streaming over zero pieces gives the same digest as one 2 MiB buffer. */
	if (!s)
		abort();
	XXH3_64bits_reset(s);
	for (unsigned i = 0; i < SF_BLOCK_SIZE / SF_PIECE_SIZE; i++)
		XXH3_64bits_update(s, piece, sizeof(piece));
	zero_csum = XXH3_64bits_digest(s);
	XXH3_freeState(s);
	zero_piece_csum = XXH3_64bits(piece, sizeof(piece));
}

uint64_t sf_zero_block_csum(void)
{
	pthread_once(&zero_once, compute_zero_csum);
	return zero_csum;
}

uint64_t sf_zero_piece_csum(void)
{
	pthread_once(&zero_once, compute_zero_csum);
	return zero_piece_csum;
}

struct sf_file *sf_alloc(void)
{
	struct sf_file *f = calloc(1, sizeof(*f));

	if (f)
		f->fd = -1;
	return f;
}

void sf_free(struct sf_file *f)
{
	if (!f)
		return;
	if (f->fd >= 0)
		close(f->fd);
	for (unsigned i = 0; i < f->ndev; i++)
		free(f->dev[i].data);
	vm_state_free(&f->st);
	free(f->block_pages);
	free(f->block_csum);
	free(f);
}

int sf_read_at(const struct sf_file *f, void *buf, size_t len, uint64_t off, const char *what)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = pread(f->fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return ferr_sys(errno, "%s: reading %s at byte %llu", f->path, what,
					(unsigned long long)off);
		if (n == 0)
			return ferr(EBADMSG, "%s is truncated: it ends at byte %llu, inside %s",
				    f->path, (unsigned long long)off, what);
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static int check_preamble(struct sf_file *f)
{
	uint8_t pre[MIG_PREAMBLE_SIZE];
	int rc;

	if (f->file_size < MIG_PREAMBLE_SIZE)
		return ferr(EBADMSG, "%s is truncated: %llu bytes, less than the %u-byte preamble",
			    f->path, (unsigned long long)f->file_size, MIG_PREAMBLE_SIZE);
	rc = sf_read_at(f, pre, sizeof(pre), 0, "the preamble");
	if (rc)
		return rc;
	if (memcmp(pre, MIG_MAGIC, 8) != 0)
		return ferr(EBADMSG, "%s is not a ferry save file (it does not start with \"%s\")",
			    f->path, MIG_MAGIC);
	f->version = get_le32(pre + 8);
	f->flags = get_le32(pre + 12);
	if (f->version > MIG_VERSION)
		return ferr(EPROTONOSUPPORT, "%s is format version %u, written by a newer ferry; "
			    "this ferry reads version %u", f->path, f->version, MIG_VERSION);
	if (f->version != MIG_VERSION)
		return ferr(EPROTONOSUPPORT, "%s is format version %u, which this ferry "
			    "(version %u) does not read", f->path, f->version, MIG_VERSION);
	if (!(f->flags & SF_PREAMBLE_SAVE_FILE))
		return ferr(EBADMSG, "%s is a ferry migration stream, not a save file", f->path);
	if (f->flags & ~SF_PREAMBLE_SAVE_FILE)
		return ferr(EPROTONOSUPPORT, "%s uses format flags %#x that this ferry does not know",
			    f->path, f->flags & ~SF_PREAMBLE_SAVE_FILE);
	return 0;
}

/* Reads and checks the section at *off; payload into buf; *off moves past it. */
static int read_section(struct sf_file *f, uint64_t *off, struct mig_section *s,
			struct dbuf *buf)
{
	uint8_t hdr[MIG_SECTION_HDR_SIZE];
	char what[64];
	bool csum_ok;
	int rc;

	if (*off + MIG_SECTION_HDR_SIZE > f->file_size) {
		if (*off == f->file_size)
			return ferr(EBADMSG, "%s is truncated: it ends at byte %llu, before its "
				    "RAM map", f->path, (unsigned long long)*off);
		return ferr(EBADMSG, "%s is truncated: it ends at byte %llu, inside the section "
			    "header at byte %llu", f->path, (unsigned long long)f->file_size,
			    (unsigned long long)*off);
	}
	rc = sf_read_at(f, hdr, sizeof(hdr), *off, "a section header");
	if (rc)
		return rc;
	if (get_le32(hdr + 28) != mig_csum32(hdr, 28))
		return ferr(EBADMSG, "%s is corrupt: the section header at byte %llu fails its "
			    "checksum", f->path, (unsigned long long)*off);
	rc = mig_section_decode(hdr, s);
	if (rc)
		return sf_errwrap(rc, "%s: section at byte %llu", f->path, (unsigned long long)*off);
	if (*off + MIG_SECTION_HDR_SIZE + s->length > f->file_size)
		return ferr(EBADMSG, "%s is truncated: it ends at byte %llu, inside the %s section "
			    "at byte %llu (%llu bytes long)", f->path,
			    (unsigned long long)f->file_size, mig_section_name(s->type),
			    (unsigned long long)*off, (unsigned long long)s->length);
	dbuf_reset(buf);
	if (!dbuf_reserve(buf, s->length))
		return -ENOMEM;
	snprintf(what, sizeof(what), "the %s section", mig_section_name(s->type));
	rc = sf_read_at(f, buf->data, s->length, *off + MIG_SECTION_HDR_SIZE, what);
	if (rc)
		return rc;
	buf->len = s->length;
	csum_ok = !(s->flags & MIG_SECF_NO_CSUM) &&
		  mig_csum32(buf->data, buf->len) == s->payload_csum;
	if (f->nsec == SF_MAX_SECTIONS)
		return ferr(EBADMSG, "%s has more than %u sections", f->path, SF_MAX_SECTIONS);
	f->sec[f->nsec++] = (struct sf_section_info){ .offset = *off, .s = *s, .csum_ok = csum_ok };
	if (s->flags & MIG_SECF_NO_CSUM)
		return ferr(EBADMSG, "%s: the %s section at byte %llu has no checksum, which a save "
			    "file never omits", f->path, mig_section_name(s->type),
			    (unsigned long long)*off);
	if (!csum_ok)
		return ferr(EBADMSG, "%s is corrupt: the %s section at byte %llu fails its checksum",
			    f->path, mig_section_name(s->type), (unsigned long long)*off);
	*off += MIG_SECTION_HDR_SIZE + s->length;
	return 0;
}

static int want_version(const struct sf_file *f, const struct mig_section *s, uint64_t off,
			uint32_t version)
{
	if (s->version == version)
		return 0;
	return ferr(EPROTONOSUPPORT, "%s: the %s section at byte %llu is version %u; this ferry "
		    "reads version %u", f->path, mig_section_name(s->type), (unsigned long long)off,
		    s->version, version);
}

static int take_device(struct sf_file *f, const struct mig_section *s, const struct dbuf *b,
		       uint64_t off)
{
	struct sf_device_state *d;
	struct dreader r;

	if (f->ndev == VM_DEVICES_MAX)
		return ferr(EBADMSG, "%s: more than %u DEVICE sections", f->path, VM_DEVICES_MAX);
	d = &f->dev[f->ndev];
	dreader_init(&r, b->data, b->len);
	dreader_str(&r, d->name, sizeof(d->name));
	if (!dreader_ok(&r) || !d->name[0])
		return ferr(EBADMSG, "%s: the DEVICE section at byte %llu has no valid name", f->path,
			    (unsigned long long)off);
	for (unsigned i = 0; i < f->ndev; i++)
		if (strcmp(f->dev[i].name, d->name) == 0)
			return ferr(EBADMSG, "%s: device %s appears twice", f->path, d->name);
	d->len = r.left;
	d->data = malloc(d->len ? d->len : 1);
	if (!d->data)
		return -ENOMEM;
	memcpy(d->data, r.p, d->len);
	d->version = s->version;
	f->ndev++;
	return 0;
}

static int take_map(struct sf_file *f, const struct dbuf *b, uint64_t off)
{
	struct dreader r;
	uint32_t block_size, algo, reserved;

	dreader_init(&r, b->data, b->len);
	f->ram_off = dreader_le64(&r);
	f->ram_size = dreader_le64(&r);
	block_size = dreader_le32(&r);
	f->nblocks = dreader_le32(&r);
	algo = dreader_le32(&r);
	reserved = dreader_le32(&r);
	if (!dreader_ok(&r))
		return ferr(EBADMSG, "%s: the RAM map at byte %llu is too short", f->path,
			    (unsigned long long)off);
	if (f->ram_size != f->desc.mem_size)
		return ferr(EBADMSG, "%s: the RAM map covers %llu bytes, the VM has %llu", f->path,
			    (unsigned long long)f->ram_size, (unsigned long long)f->desc.mem_size);
	if (block_size != SF_BLOCK_SIZE || algo != SF_CSUM_XXH3 || reserved)
		return ferr(EBADMSG, "%s: the RAM map uses %u-byte blocks and checksum %u; this "
			    "ferry knows %u-byte blocks and checksum %u (XXH3-64)", f->path,
			    block_size, algo, SF_BLOCK_SIZE, SF_CSUM_XXH3);
	if (f->nblocks != f->ram_size / SF_BLOCK_SIZE || r.left != (size_t)f->nblocks * 16)
		return ferr(EBADMSG, "%s: the RAM map lists %u blocks in %zu bytes; %llu bytes of "
			    "RAM need %llu", f->path, f->nblocks, r.left,
			    (unsigned long long)f->ram_size,
			    (unsigned long long)(f->ram_size / SF_BLOCK_SIZE));
	f->block_pages = calloc(f->nblocks, sizeof(*f->block_pages));
	f->block_csum = calloc(f->nblocks, sizeof(*f->block_csum));
	if (!f->block_pages || !f->block_csum)
		return -ENOMEM;
	for (uint32_t i = 0; i < f->nblocks; i++) {
		uint32_t flags = dreader_le32(&r), pages = dreader_le32(&r);

		f->block_csum[i] = dreader_le64(&r);
		if ((flags & ~SF_BLOCK_DATA) || pages > SF_BLOCK_PAGES ||
		    !(flags & SF_BLOCK_DATA) != !pages)
			return ferr(EBADMSG, "%s: RAM map entry %u is invalid (flags %#x, %u pages)",
				    f->path, i, flags, pages);
		if (!pages && f->block_csum[i] != sf_zero_block_csum())
			return ferr(EBADMSG, "%s: RAM map entry %u says the block is empty but "
				    "carries the checksum of a non-zero block", f->path, i);
		f->block_pages[i] = (uint16_t)pages;
		if (pages) {
			f->data_blocks++;
			f->stored_pages += pages;
		}
	}
	f->have_map = true;
	return 0;
}

/*
 * HOT_PIECES: u32 piece size, u32 count, then per piece u64 guest-physical
 * address and u64 XXH3-64 of its bytes as restored.  A hint, but it comes
 * from outside: every field is checked, and a bad one refuses the file.
 */
static int take_hot(struct sf_file *f, const struct dbuf *b, uint64_t off)
{
	struct dreader r;
	uint32_t piece_size, count;

	dreader_init(&r, b->data, b->len);
	piece_size = dreader_le32(&r);
	count = dreader_le32(&r);
	if (!dreader_ok(&r) || piece_size != SF_PIECE_SIZE || count > SF_HOT_MAX ||
	    r.left != (size_t)count * SF_HOT_ENTRY_SIZE)
		return ferr(EBADMSG, "%s: the HOT_PIECES section at byte %llu is malformed (%zu "
			    "bytes; it must list at most %u pieces of %u bytes, 16 bytes each)",
			    f->path, (unsigned long long)off, b->len, SF_HOT_MAX, SF_PIECE_SIZE);
	for (uint32_t i = 0; i < count; i++) {
		uint64_t gpa = dreader_le64(&r);

		f->hot_csum[i] = dreader_le64(&r);
		if (gpa % SF_PIECE_SIZE || gpa >= f->desc.mem_size ||
		    (i && gpa <= f->hot_gpa[i - 1]))
			return ferr(EBADMSG, "%s: HOT_PIECES entry %u (guest-physical %#llx) is not "
				    "the start of a piece of guest RAM after the entry before it",
				    f->path, i, (unsigned long long)gpa);
		f->hot_gpa[i] = gpa;
	}
	f->nhot = count;
	f->have_hot = true;
	return 0;
}

/*
 * A listed piece in a block the map says is empty must carry the checksum
 * of zeros.  The lazy restore never reads such a piece (the memfd gives the
 * zeros), so this is checked here, for it and the eager restore alike.
 */
static int check_hot_against_map(const struct sf_file *f)
{
	for (unsigned i = 0; i < f->nhot; i++)
		if (!f->block_pages[f->hot_gpa[i] >> SF_BLOCK_SHIFT] &&
		    f->hot_csum[i] != sf_zero_piece_csum())
			return ferr(EBADMSG, "%s: HOT_PIECES entry %u (guest-physical %#llx) lies in a "
				    "block the RAM map says is empty, but its checksum is not that of "
				    "zeros", f->path, i, (unsigned long long)f->hot_gpa[i]);
	return 0;
}

/* After the RAM map: its padding, the RAM area, END and nothing more. */
static int check_tail(struct sf_file *f, uint64_t map_end)
{
	uint64_t want_off = (map_end + SF_RAM_ALIGN - 1) / SF_RAM_ALIGN * SF_RAM_ALIGN;
	uint64_t end_off, total;
	uint8_t pad[SF_RAM_ALIGN];
	struct mig_section s;
	struct dbuf buf;
	int rc;

	if (f->ram_off != want_off)
		return ferr(EBADMSG, "%s: the RAM map puts the RAM area at byte %llu; it must start "
			    "at byte %llu, the first page boundary after the map", f->path,
			    (unsigned long long)f->ram_off, (unsigned long long)want_off);
	end_off = f->ram_off + f->ram_size;
	if (f->file_size < end_off)
		return ferr(EBADMSG, "%s is truncated: it ends at byte %llu, inside the RAM area "
			    "(bytes %llu to %llu); the END section is missing", f->path,
			    (unsigned long long)f->file_size, (unsigned long long)f->ram_off,
			    (unsigned long long)end_off);
	rc = sf_read_at(f, pad, want_off - map_end, map_end, "the padding before the RAM area");
	if (rc)
		return rc;
	for (uint64_t i = 0; i < want_off - map_end; i++)
		if (pad[i])
			return ferr(EBADMSG, "%s is corrupt: a non-zero byte at %llu, in the padding "
				    "before the RAM area", f->path, (unsigned long long)(map_end + i));
	if (f->file_size == end_off)
		return ferr(EBADMSG, "%s is truncated: it ends at byte %llu, where its END section "
			    "should start", f->path, (unsigned long long)end_off);
	dbuf_init(&buf);
	rc = read_section(f, &end_off, &s, &buf);
	if (!rc && s.type != MIG_SEC_END)
		rc = ferr(EBADMSG, "%s: a %s section follows the RAM area; only END may",
			  f->path, mig_section_name(s.type));
	if (!rc)
		rc = want_version(f, &s, end_off - MIG_SECTION_HDR_SIZE - s.length, SF_END_VERSION);
	if (!rc && buf.len != SF_END_PAYLOAD)
		rc = ferr(EBADMSG, "%s: the END section holds %zu bytes, expected %u", f->path,
			  buf.len, SF_END_PAYLOAD);
	if (!rc) {
		total = get_le64(buf.data);
		if (get_le32(buf.data + 8) != f->nsec - 1 || get_le32(buf.data + 12))
			rc = ferr(EBADMSG, "%s: END counts %u sections before it; the file has %u",
				  f->path, get_le32(buf.data + 8), f->nsec - 1);
		else if (total != end_off || f->file_size != end_off)
			rc = ferr(EBADMSG, "%s: END records a file of %llu bytes; the file has %llu "
				  "(%llu bytes follow END)", f->path, (unsigned long long)total,
				  (unsigned long long)f->file_size,
				  (unsigned long long)(f->file_size > end_off ? f->file_size - end_off
									       : 0));
	}
	dbuf_free(&buf);
	if (!rc)
		f->have_end = true;
	return rc;
}

/* One section before the RAM map, checked against where we are. */
static int take_section(struct sf_file *f, const struct mig_section *s, const struct dbuf *b,
			uint64_t off)
{
	bool have_desc = f->st.vcpus != NULL;
	bool vcpus_done = have_desc && f->have_vm_state && f->nvcpus_read == f->desc.ncpus;
	int rc;

	if (!have_desc && s->type != MIG_SEC_VMDESC)
		return ferr(EBADMSG, "%s: the file starts with a %s section; a save file starts "
			    "with VMDESC", f->path, mig_section_name(s->type));
	switch (s->type) {
	case MIG_SEC_VMDESC:
		if (have_desc)
			break;
		if ((rc = want_version(f, s, off, MIG_VMDESC_VERSION)))
			return rc;
		rc = mig_vmdesc_decode(b->data, b->len, &f->desc);
		if (rc)
			return sf_errwrap(rc, "%s", f->path);
		return vm_state_alloc(&f->st, f->desc.ncpus);
	case MIG_SEC_VM_STATE:
		if (f->have_vm_state)
			break;
		if ((rc = want_version(f, s, off, MIG_STATE_VERSION)))
			return rc;
		rc = mig_vm_state_decode(b->data, b->len, &f->st);
		if (rc)
			return sf_errwrap(rc, "%s", f->path);
		if (f->st.mem_size != f->desc.mem_size)
			return ferr(EBADMSG, "%s: the VM state is for %llu bytes of RAM, the "
				    "description says %llu", f->path,
				    (unsigned long long)f->st.mem_size,
				    (unsigned long long)f->desc.mem_size);
		f->have_vm_state = true;
		return 0;
	case MIG_SEC_VCPU_STATE:
		if (!f->have_vm_state || vcpus_done || s->id != f->nvcpus_read)
			return ferr(EBADMSG, "%s: VCPU_STATE for vCPU %u at byte %llu is out of "
				    "order (expected vCPU %u after VM_STATE)", f->path, s->id,
				    (unsigned long long)off, f->nvcpus_read);
		if ((rc = want_version(f, s, off, MIG_STATE_VERSION)))
			return rc;
		rc = mig_vcpu_state_decode(b->data, b->len, &f->st.vcpus[s->id]);
		if (!rc && f->st.vcpus[s->id].index != s->id)
			rc = ferr(EBADMSG, "the section for vCPU %u holds vCPU %u", s->id,
				  f->st.vcpus[s->id].index);
		if (rc)
			return sf_errwrap(rc, "%s", f->path);
		f->nvcpus_read++;
		return 0;
	case MIG_SEC_DEVICE:
		if (!vcpus_done)
			break;
		return take_device(f, s, b, off);
	case MIG_SEC_RAM_MAP:
		if (!vcpus_done)
			return ferr(EBADMSG, "%s: the RAM map at byte %llu comes before the state of "
				    "all %u vCPUs (%u read)", f->path, (unsigned long long)off,
				    f->desc.ncpus, f->nvcpus_read);
		if ((rc = want_version(f, s, off, SF_MAP_VERSION)))
			return rc;
		return take_map(f, b, off);
	case MIG_SEC_HOT_PIECES:
		if (!vcpus_done || f->have_hot)
			break;
		/* A later version of a hint is skipped like an unknown hint. */
		if (s->version != SF_HOT_VERSION && (s->flags & MIG_SECF_OPTIONAL))
			return 0;
		if ((rc = want_version(f, s, off, SF_HOT_VERSION)))
			return rc;
		return take_hot(f, b, off);
	default:
		if (s->flags & MIG_SECF_OPTIONAL)
			return 0;
		break;
	}
	return ferr(EBADMSG, "%s: unexpected %s section (type %u) at byte %llu", f->path,
		    mig_section_name(s->type), s->type, (unsigned long long)off);
}

int sf_load(struct sf_file *f, const char *path)
{
	uint64_t off = MIG_PREAMBLE_SIZE;
	struct mig_section s;
	struct stat sb;
	struct dbuf buf;
	int rc;

	snprintf(f->path, sizeof(f->path), "%s", path);
	f->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (f->fd < 0)
		return ferr_sys(errno, "cannot open %s", path);
	if (fstat(f->fd, &sb) < 0)
		return ferr_sys(errno, "cannot stat %s", path);
	if (!S_ISREG(sb.st_mode))
		return ferr(EINVAL, "%s is not a regular file", path);
	f->file_size = (uint64_t)sb.st_size;
	/* END lies at the far end: start reading it while the head is read. */
	if (f->file_size > SF_RAM_ALIGN)
		(void)posix_fadvise(f->fd, (off_t)(f->file_size - SF_RAM_ALIGN), SF_RAM_ALIGN,
				    POSIX_FADV_WILLNEED);
	rc = check_preamble(f);
	if (rc)
		return rc;
	dbuf_init(&buf);
	while (!f->have_map) {
		uint64_t at = off;

		rc = read_section(f, &off, &s, &buf);
		if (!rc && s.type == MIG_SEC_END)
			rc = ferr(EBADMSG, "%s: END at byte %llu comes before the RAM map", path,
				  (unsigned long long)at);
		if (!rc)
			rc = take_section(f, &s, &buf, at);
		if (rc)
			break;
	}
	dbuf_free(&buf);
	if (!rc)
		rc = check_hot_against_map(f);
	if (!rc)
		rc = check_tail(f, off);
	return rc;
}

static int bad_block(const struct sf_file *f, uint32_t b)
{
	uint64_t gpa = sf_block_gpa(b);

	return ferr(EBADMSG, "%s is corrupt: RAM block %u (guest-physical %#llx to %#llx) fails "
		    "its checksum", f->path, b, (unsigned long long)gpa,
		    (unsigned long long)(gpa + SF_BLOCK_SIZE - 1));
}

int sf_read_block(const struct sf_file *f, uint32_t b, uint8_t *buf)
{
	uint64_t gpa = sf_block_gpa(b);
	int rc;

	if (b >= f->nblocks)
		return ferr(EINVAL, "block %u is outside the RAM map", b);
	rc = sf_read_at(f, buf, SF_BLOCK_SIZE, f->ram_off + gpa, "the RAM area");
	if (rc)
		return rc;
	if (XXH3_64bits(buf, SF_BLOCK_SIZE) != f->block_csum[b])
		return bad_block(f, b);
	return 0;
}

int sf_read_block_piece(const struct sf_file *f, uint32_t b, uint32_t piece, uint8_t *out)
{
	uint64_t gpa = sf_block_gpa(b);
	uint8_t *scratch;
	XXH3_state_t *st;
	int rc = 0;

	if (b >= f->nblocks || piece >= SF_BLOCK_SIZE / SF_PIECE_SIZE)
		return ferr(EINVAL, "block %u piece %u is outside the RAM map", b, piece);
	scratch = malloc(SF_PIECE_SIZE);
	st = XXH3_createState();
	if (!scratch || !st || XXH3_64bits_reset(st) != XXH_OK) {
		free(scratch);
		XXH3_freeState(st);
		return -ENOMEM;
	}
	for (uint32_t i = 0; !rc && i < SF_BLOCK_SIZE / SF_PIECE_SIZE; i++) {
		uint8_t *buf = i == piece ? out : scratch;

		rc = sf_read_at(f, buf, SF_PIECE_SIZE, f->ram_off + gpa + (uint64_t)i * SF_PIECE_SIZE,
			     "the RAM area");
		if (!rc && XXH3_64bits_update(st, buf, SF_PIECE_SIZE) != XXH_OK)
			rc = -EINVAL;
	}
	if (!rc && XXH3_64bits_digest(st) != f->block_csum[b])
		rc = bad_block(f, b);
	free(scratch);
	XXH3_freeState(st);
	return rc;
}
