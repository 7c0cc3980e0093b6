// The cellfm executable.
#include "trainers/cli/cli.h"

int main(int argc, char** argv) {
  return cellfm::trainers::run_cli(argc, argv);
}
