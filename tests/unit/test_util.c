#include <criterion/criterion.h>
#include <errno.h>

#include "core/util.h"

Test(util, parse_size_accepts_binary_suffixes)
{
	static const struct { const char *in; uint64_t want; } ok[] = {
		{ "0", 0 }, { "4096", 4096 }, { "1k", 1024 }, { "512M", 512ull << 20 },
		{ "4G", 4ull << 30 }, { "16GiB", 16ull << 30 }, { "2T", 2ull << 40 },
		{ "100B", 100 }, { "3MB", 3ull << 20 },
	};

	for (unsigned i = 0; i < ARRAY_SIZE(ok); i++) {
		uint64_t v = 1;

		cr_assert_eq(parse_size(ok[i].in, &v), 0, "%s", ok[i].in);
		cr_assert_eq(v, ok[i].want, "%s gave %llu", ok[i].in, (unsigned long long)v);
	}
}

Test(util, parse_size_rejects_garbage_and_overflow)
{
	static const char *const bad[] = {
		"", "M", "-1", "1.5G", "12 G", "1X", "1Gi", "1GiBs", "0x10",
		"99999999999999999999", "17179869184T",
	};
	uint64_t v;

	for (unsigned i = 0; i < ARRAY_SIZE(bad); i++)
		cr_assert_neq(parse_size(bad[i], &v), 0, "'%s' was accepted", bad[i]);
	cr_assert_eq(parse_size(NULL, &v), -EINVAL);
}

Test(util, parse_u64_is_strict)
{
	uint64_t v;

	cr_assert_eq(parse_u64("18446744073709551615", &v), 0);
	cr_assert_eq(v, UINT64_MAX);
	cr_assert_eq(parse_u64("18446744073709551616", &v), -ERANGE);
	cr_assert_eq(parse_u64("+1", &v), -EINVAL);
	cr_assert_eq(parse_u64("1 ", &v), -EINVAL);
	cr_assert_eq(parse_u64("", &v), -EINVAL);
}

Test(util, ferr_keeps_a_message_per_thread)
{
	int rc = ferr(ENOENT, "no such thing: %d", 42);

	cr_assert_eq(rc, -ENOENT);
	cr_assert_str_eq(ferr_msg(rc), "no such thing: 42");
	rc = ferr_sys(EACCES, "opening x");
	cr_assert_str_eq(ferr_msg(rc), "opening x: Permission denied");
	ferr_clear();
	cr_assert_str_eq(ferr_msg(-EIO), "Input/output error");
}

Test(util, fmt_size_renders_units)
{
	char buf[32];

	cr_assert_str_eq(fmt_size(buf, sizeof(buf), 512), "512 B");
	cr_assert_str_eq(fmt_size(buf, sizeof(buf), 1536), "1.5 KiB");
	cr_assert_str_eq(fmt_size(buf, sizeof(buf), 16ull << 30), "16.0 GiB");
}
