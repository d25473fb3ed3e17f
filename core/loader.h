/*
 * Guest images: finding a program by name, checking its ELF and image
 * header, copying it into guest RAM, and checking --guest-arg keys against
 * the list the image declares.  An image file is input from outside: every
 * offset, size and address in it is checked before use.
 */
#ifndef FERRY_LOADER_H
#define FERRY_LOADER_H

#include <stddef.h>
#include <stdint.h>

#include "../guest/abi.h"
#include "memory.h"

#define GUEST_IMAGE_MAX_BYTES (16u << 20)

/*
 * Resolves a program name ("dirty") to an image path: $FERRY_GUEST_DIR, then
 * the guest/ directory beside the ferry binary.  A name with a '/' is a path.
 */
int loader_find_image(const char *name, char *path, size_t path_len);
/* Comma-separated names of the programs found, for error messages. */
void loader_list_programs(char *out, size_t len);

/* Validates an ELF image and loads it into RAM; fills *hdr. */
int loader_load_elf(struct guest_mem *m, const uint8_t *elf, size_t len,
		    struct ferry_image_header *hdr);
int loader_load_file(struct guest_mem *m, const char *path,
		     struct ferry_image_header *hdr);

/* Checks "key=value" arguments: syntax, known keys, no repeats, size. */
int loader_check_args(const struct ferry_image_header *hdr,
		      char *const *args, unsigned nargs);

#endif
