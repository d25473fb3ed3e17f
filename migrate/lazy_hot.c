/*
 * The pages a restored vCPU needs before it can run its first instruction:
 * the page tables that translate its RIP and RSP, and the code and stack
 * pages themselves.  The lazy loader reads and checks their blocks while
 * the VM is being created and copies these pages in before the vCPUs
 * start, so that the first instructions do not each wait for a fault.
 *
 * This is only a hint: a wrong guess costs a block read, never
 * correctness.  Entries come from the file and are checked like any other
 * input: every table and page address must lie inside guest RAM.
 */
#include <errno.h>

#include "../core/util.h"
#include "lazy_int.h"

#define CR0_PG (1ull << 31)
#define CR4_LA57 (1ull << 12)
#define EFER_LMA (1ull << 10)
#define PTE_P 0x1ull
#define PTE_PS 0x80ull
#define PTE_ADDR 0x000ffffffffff000ull

struct hot {
	const struct sf_file *f;
	sf_page_fn page;
	void *opaque;
	uint64_t *out;
	unsigned n, max;
};

static void add(struct hot *h, uint64_t gpa)
{
	uint64_t pg = gpa & ~(GMEM_PAGE_SIZE - 1);

	if (gpa >= h->f->ram_size || h->n == h->max)
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
		if (table >= h->f->ram_size)
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

int sf_hot_pages(const struct sf_file *f, sf_page_fn page, void *opaque, uint64_t *out,
		 unsigned max)
{
	struct hot h = { .f = f, .page = page, .opaque = opaque, .out = out, .max = max };

	for (unsigned i = 0; i < f->desc.ncpus; i++) {
		const struct kvm_sregs *s = &f->st.vcpus[i].sregs;
		const struct kvm_regs *r = &f->st.vcpus[i].regs;
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
