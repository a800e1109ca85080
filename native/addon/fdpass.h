// fdpass.h: the descriptor-passing functions of the addon (fdpass.cc), added to its exports by addon.cc.
#pragma once
#include <napi.h>

void InitFdPass(Napi::Env env, Napi::Object exports);
