/*
 * The pages a restored vCPU needs before it can run its first instruction:
 * the page tables that translate its RIP and RSP, and the code and stack
 * pages themselves.  The writer lists the 64 KiB pieces holding them in the
 * HOT_PIECES section, each with its own checksum; the lazy loader reads and
 * checks those pieces while the VM is being created and copies them in
 * before the vCPUs start, so that the first instructions do not each wait
 * for a fault, and so that the restore reads 64 KiB per piece instead of a
 * whole 2 MiB block to check it.
 *
 * The walk is only a hint: a wrong guess costs a read, never correctness.
 * Its inputs come from the file and are checked like any other input:
 * every table and page address must lie inside guest RAM.
 */
#include <errno.h>
#include <stdlib.h>
#include <xxhash.h>

#include "../core/util.h"
#include "savefile.h"

#define CR0_PG (1ull << 31)
#define CR4_LA57 (1ull << 12)
#define EFER_LMA (1ull << 10)
#define PTE_P 0x1ull
#define PTE_PS 0x80ull
#define PTE_ADDR 0x000ffffffffff000ull

struct hot {
	uint64_t ram_size;
	sf_page_fn page;
	void *opaque;
	uint64_t *out;
	unsigned n, max;
};

static void add(struct hot *h, uint64_t gpa)
{
	uint64_t pg = gpa & ~(GMEM_PAGE_SIZE - 1);

	if (gpa >= h->ram_size || h->n == h->max)
		return;
	for (unsigned i = 0; i < h->n; i++)
		if (h->out[i] == pg)
			return;
	h->out[h->n++] = pg;
}

/* Walks va through the tables at cr3, adding every page it touches. */
static int walk(struct hot *h, uint64_t cr3, unsigned levels, uint64_t va)
{
	uint64_t table = cr3 & PTE_ADDR;
	unsigned shift = 12 + 9 * levels;

	while (shift > 12) {
		const uint8_t *pg;
		uint64_t e;
		int rc = 0;

		shift -= 9;
		if (table >= h->ram_size)
			return 0;
		add(h, table);
		pg = h->page(h->opaque, table, &rc);
		if (!pg)
			return rc;
		e = get_le64(pg + ((va >> shift) & 511) * 8);
		if (!(e & PTE_P))
			return 0;
		if ((shift == 21 || shift == 30) && (e & PTE_PS)) {
			uint64_t size = 1ull << shift;

			add(h, (e & PTE_ADDR & ~(size - 1)) + (va & (size - 1)));
			return 0;
		}
		table = e & PTE_ADDR;
	}
	add(h, table);
	return 0;
}

int sf_hot_pages(const struct vm_state *st, unsigned ncpus, uint64_t ram_size, sf_page_fn page,
		 void *opaque, uint64_t *out, unsigned max)
{
	struct hot h = { .ram_size = ram_size, .page = page, .opaque = opaque, .out = out,
			 .max = max };

	for (unsigned i = 0; i < ncpus; i++) {
		const struct kvm_sregs *s = &st->vcpus[i].sregs;
		const struct kvm_regs *r = &st->vcpus[i].regs;
		int rc = 0;

		if (!(s->cr0 & CR0_PG)) {
			/* No paging: the addresses are physical. */
			add(&h, s->cs.base + r->rip);
			add(&h, s->ss.base + r->rsp);
			continue;
		}
		if (!(s->efer & EFER_LMA)) {
			add(&h, s->cr3 & 0xfffff000ull);
			continue;
		}
		rc = walk(&h, s->cr3, s->cr4 & CR4_LA57 ? 5 : 4, r->rip);
		if (!rc)
			rc = walk(&h, s->cr3, s->cr4 & CR4_LA57 ? 5 : 4, r->rsp);
		if (rc)
			return rc;
	}
	return (int)h.n;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

unsigned sf_hot_pieces_of(const uint64_t *pages, unsigned n, uint64_t *pieces)
{
	unsigned k = 0;

	for (unsigned i = 0; i < n; i++)
		pieces[i] = pages[i] / SF_PIECE_SIZE * SF_PIECE_SIZE;
	qsort(pieces, n, sizeof(*pieces), cmp_u64);
	for (unsigned i = 0; i < n; i++)
		if (!k || pieces[k - 1] != pieces[i])
			pieces[k++] = pieces[i];
	return k;
}

int sf_hot_find(const struct sf_file *f, uint64_t gpa)
{
	uint64_t piece = gpa / SF_PIECE_SIZE * SF_PIECE_SIZE;

	for (unsigned i = 0; i < f->nhot; i++)
		if (f->hot_gpa[i] == piece)
			return (int)i;
	return -1;
}

static int bad_piece(const struct sf_file *f, unsigned i)
{
	return ferr(EBADMSG, "%s is corrupt: the RAM piece at guest-physical %#llx to %#llx "
		    "(HOT_PIECES entry %u) fails its checksum", f->path,
		    (unsigned long long)f->hot_gpa[i],
		    (unsigned long long)(f->hot_gpa[i] + SF_PIECE_SIZE - 1), i);
}

int sf_read_hot_piece(const struct sf_file *f, unsigned i, uint8_t *out)
{
	int rc;

	if (i >= f->nhot)
		return ferr(EINVAL, "HOT_PIECES entry %u does not exist", i);
	rc = sf_read_at(f, out, SF_PIECE_SIZE, f->ram_off + f->hot_gpa[i], "the RAM area");
	if (rc)
		return rc;
	if (XXH3_64bits(out, SF_PIECE_SIZE) != f->hot_csum[i])
		return bad_piece(f, i);
	return 0;
}

int sf_check_hot_ram(const struct sf_file *f, const uint8_t *ram)
{
	for (unsigned i = 0; i < f->nhot; i++)
		if (XXH3_64bits(ram + f->hot_gpa[i], SF_PIECE_SIZE) != f->hot_csum[i])
			return bad_piece(f, i);
	return 0;
}
