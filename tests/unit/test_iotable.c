#include <criterion/criterion.h>
#include <errno.h>

#include "core/iotable.h"

static void nop(struct vcpu *v, uint64_t a, bool w, uint8_t *d, unsigned s, void *o)
{
	(void)v, (void)a, (void)w, (void)d, (void)s, (void)o;
}

Test(iotable, finds_the_range_holding_an_access)
{
	struct iotable t = { .n = 0 };

	cr_assert_eq(iotable_register(&t, 0xe0, 4, "a", nop, NULL), 0);
	cr_assert_eq(iotable_register(&t, 0xe4, 4, "b", nop, NULL), 0);
	cr_assert_str_eq(iotable_find(&t, 0xe0, 4)->name, "a");
	cr_assert_str_eq(iotable_find(&t, 0xe2, 2)->name, "a");
	cr_assert_str_eq(iotable_find(&t, 0xe7, 1)->name, "b");
	cr_assert_null(iotable_find(&t, 0xe2, 4), "an access spanning two ranges matched");
	cr_assert_null(iotable_find(&t, 0xe8, 1));
	cr_assert_null(iotable_find(&t, 0xdf, 1));
}

Test(iotable, rejects_overlaps_and_wraps)
{
	struct iotable t = { .n = 0 };

	cr_assert_eq(iotable_register(&t, 0x1000, 0x100, "a", nop, NULL), 0);
	cr_assert_eq(iotable_register(&t, 0x10ff, 1, "b", nop, NULL), -EEXIST);
	cr_assert_eq(iotable_register(&t, 0xf00, 0x101, "c", nop, NULL), -EEXIST);
	cr_assert_eq(iotable_register(&t, 0x1100, 1, "d", nop, NULL), 0);
	cr_assert_eq(iotable_register(&t, UINT64_MAX, 2, "e", nop, NULL), -EINVAL);
	cr_assert_eq(iotable_register(&t, 5, 0, "f", nop, NULL), -EINVAL);
}

Test(iotable, fills_up_cleanly)
{
	struct iotable t = { .n = 0 };

	for (unsigned i = 0; i < IOTABLE_MAX; i++)
		cr_assert_eq(iotable_register(&t, i * 16, 16, "x", nop, NULL), 0);
	cr_assert_eq(iotable_register(&t, 0x100000, 1, "y", nop, NULL), -ENOSPC);
}
