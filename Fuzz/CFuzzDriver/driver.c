// Only the declaration in include/CFuzzDriver.h matters; SwiftPM wants a source file.
#include "CFuzzDriver.h"
