/*
 * p11fault: a PKCS#11 module that is SoftHSM but for C_Sign, whose faults the tests
 * switch on and off with files. SoftHSM cannot be made to sign wrong, fail or hang on
 * demand, and a daemon that trusts its token must be tested against one that does.
 *
 * Built by the tests (selfcheck_e2e_test.go) with
 *   gcc -shared -fPIC -I<miekg/pkcs11's folder> -DREAL_MODULE='"..."' -DFAULT_DIR='"..."'
 * While FAULT_DIR/flip exists, each signature comes back with one bit of s flipped (a
 * well-formed signature that does not verify); while FAULT_DIR/fail exists, C_Sign
 * answers CKR_DATA_INVALID; while FAULT_DIR/slow exists, it takes 1.5 s. Everything else
 * is SoftHSM's own function, called directly.
 */
#define CK_PTR *
#define CK_DEFINE_FUNCTION(returnType, name) returnType name
#define CK_DECLARE_FUNCTION(returnType, name) returnType name
#define CK_DECLARE_FUNCTION_POINTER(returnType, name) returnType (*name)
#define CK_CALLBACK_FUNCTION(returnType, name) returnType (*name)
#ifndef NULL_PTR
#define NULL_PTR 0
#endif
#include <dlfcn.h>
#include <pthread.h>
#include <unistd.h>
#include "pkcs11.h"

static CK_FUNCTION_LIST wrapped;
static CK_C_Sign real_sign;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static CK_RV load_rv = CKR_GENERAL_ERROR;

static int fault(const char *name)
{
	return access(name, F_OK) == 0;
}

static CK_RV fault_sign(CK_SESSION_HANDLE s, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR sig, CK_ULONG_PTR siglen)
{
	/* A call without a buffer asks for the length and ends nothing: passed through. */
	if (sig == NULL_PTR)
		return real_sign(s, data, len, sig, siglen);
	if (fault(FAULT_DIR "/slow"))
		usleep(1500 * 1000);
	/* The real call ends the operation, so that the session stays usable either way. */
	CK_RV rv = real_sign(s, data, len, sig, siglen);
	if (rv != CKR_OK)
		return rv;
	if (fault(FAULT_DIR "/fail"))
		return CKR_DATA_INVALID;
	if (fault(FAULT_DIR "/flip") && *siglen > 0)
		sig[*siglen - 1] ^= 1; /* the last byte of s in r||s */
	return CKR_OK;
}

static void load(void)
{
	void *h = dlopen(REAL_MODULE, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL)
		return;
	CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(h, "C_GetFunctionList");
	CK_FUNCTION_LIST_PTR real;
	if (get == NULL || get(&real) != CKR_OK)
		return;
	wrapped = *real;
	real_sign = real->C_Sign;
	wrapped.C_Sign = fault_sign;
	load_rv = CKR_OK;
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
	pthread_once(&once, load);
	if (load_rv == CKR_OK)
		*list = &wrapped;
	return load_rv;
}
