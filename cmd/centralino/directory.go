package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/lineamica/centralino/configs"
	"github.com/lineamica/centralino/routing/directory"
)

const directoryUsage = `usage: centralino directory (--redis URL | --file FILE) [--realm REALM] COMMAND

commands:
  import CONFIG                 upsert the agencies and users of CONFIG's network section
  agencies                      list agencies
  add-agency CODE NAME -region R -sector S -prefix P -number N [-overflow CODE]
  remove-agency CODE
  users [AGENCY]                list users (of one agency)
  add-user USERNAME -agency A -role phone|operator|admin -extension E -name NAME -password PW
  remove-user USERNAME
  passwd USERNAME PASSWORD      set a password (only its digest HA1s are stored)
  registrations                 list registered contacts (Redis only; a memory node
                                serves them at GET /api/registrations)

--file edits a YAML config file in place (its comments are not kept).
`

// directoryCmd runs one directory command against Redis or a config file.
func directoryCmd(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("directory", flag.ContinueOnError)
	fs.SetOutput(stdout)
	fs.Usage = func() { fmt.Fprint(stdout, directoryUsage) }
	redisURL := fs.String("redis", "", "Redis URL of the directory")
	file := fs.String("file", "", "YAML config file whose network section is the directory")
	realm := fs.String("realm", "", "digest realm for passwords (default: the file's, or lineamica.gov.it)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if (*redisURL == "") == (*file == "") {
		return errors.New("directory: give exactly one of --redis URL or --file FILE")
	}
	if fs.NArg() == 0 {
		return errors.New("directory: missing command (see centralino directory --help)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var (
		store directory.Store
		cfg   *configs.Config
		err   error
	)
	if *file != "" {
		if cfg, err = configs.Load(*file); err != nil {
			return err
		}
		store = directory.NewMemory()
		if err := directory.Load(ctx, store, cfg.Agencies(), cfg.Users()); err != nil {
			return err
		}
		if *realm == "" {
			*realm = cfg.Realm
		}
	} else {
		if store, err = directory.NewRedis(ctx, *redisURL, directory.RedisOptions{}); err != nil {
			return err
		}
	}
	defer store.Close()
	if *realm == "" {
		*realm = configs.Default().Realm
	}
	c := dirCommand{ctx: ctx, store: store, out: stdout, realm: *realm}
	changed, err := c.run(fs.Arg(0), fs.Args()[1:])
	if err != nil || !changed || cfg == nil {
		return err
	}
	return c.writeBack(*file, cfg)
}

type dirCommand struct {
	ctx   context.Context
	store directory.Store
	out   io.Writer
	realm string
}

// run executes one command and reports whether it changed the directory.
func (c dirCommand) run(name string, args []string) (bool, error) {
	switch name {
	case "import":
		if len(args) != 1 {
			return false, errors.New("import: want CONFIG")
		}
		src, err := configs.Load(args[0])
		if err != nil {
			return false, err
		}
		if err := directory.Load(c.ctx, c.store, src.Agencies(), src.Users()); err != nil {
			return false, err
		}
		fmt.Fprintf(c.out, "imported %d agencies and %d users\n", len(src.Network.Agencies), len(src.Network.Users))
		return true, nil
	case "agencies":
		as, err := c.store.Agencies(c.ctx)
		if err != nil {
			return false, err
		}
		tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "CODE\tNAME\tREGION\tSECTOR\tPREFIX\tNUMBERS\tOVERFLOW")
		for _, a := range as {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.Code, a.Name, a.Region, a.Sector, a.Prefix, strings.Join(a.Numbers, ","), a.Overflow)
		}
		return false, tw.Flush()
	case "add-agency":
		return true, c.addAgency(args)
	case "remove-agency":
		if len(args) != 1 {
			return false, errors.New("remove-agency: want CODE")
		}
		return true, c.store.DeleteAgency(c.ctx, args[0])
	case "users":
		agency := ""
		if len(args) > 0 {
			agency = args[0]
		}
		us, err := c.store.Users(c.ctx, agency)
		if err != nil {
			return false, err
		}
		tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "USERNAME\tNAME\tAGENCY\tROLE\tEXTENSION")
		for _, u := range us {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", u.Username, u.DisplayName, u.Agency, u.Role, u.Extension)
		}
		return false, tw.Flush()
	case "add-user":
		return true, c.addUser(args)
	case "remove-user":
		if len(args) != 1 {
			return false, errors.New("remove-user: want USERNAME")
		}
		return true, c.store.DeleteUser(c.ctx, args[0])
	case "passwd":
		if len(args) != 2 {
			return false, errors.New("passwd: want USERNAME PASSWORD")
		}
		u, err := c.store.User(c.ctx, args[0])
		if err != nil {
			return false, err
		}
		u.SetPassword(c.realm, args[1])
		return true, c.store.PutUser(c.ctx, u)
	case "registrations":
		bs, err := c.store.AllBindings(c.ctx)
		if err != nil {
			return false, err
		}
		tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "AOR\tCONTACT\tTRANSPORT\tSOURCE\tNODE\tEXPIRES IN")
		for _, b := range bs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", b.AOR, b.Contact, b.Transport, b.Source, b.Node, time.Until(b.Expires).Round(time.Second))
		}
		return false, tw.Flush()
	}
	return false, fmt.Errorf("directory: unknown command %q (see centralino directory --help)", name)
}

func (c dirCommand) addAgency(args []string) error {
	fs := flag.NewFlagSet("add-agency", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	a := directory.Agency{}
	fs.StringVar(&a.Region, "region", "", "region (empty for central bodies)")
	fs.StringVar(&a.Sector, "sector", "general", "sector")
	fs.StringVar(&a.Prefix, "prefix", "", "number prefix")
	number := fs.String("number", "", "public number")
	fs.StringVar(&a.Overflow, "overflow", "", "overflow agency")
	if len(args) < 2 {
		return errors.New("add-agency: want CODE NAME [flags]")
	}
	a.Code, a.Name = args[0], args[1]
	if err := fs.Parse(args[2:]); err != nil {
		return fmt.Errorf("add-agency: %w", err)
	}
	if *number != "" {
		a.Numbers = []string{*number}
	}
	return c.store.PutAgency(c.ctx, a)
}

func (c dirCommand) addUser(args []string) error {
	fs := flag.NewFlagSet("add-user", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	u := directory.User{}
	fs.StringVar(&u.Agency, "agency", "", "agency IPA code")
	role := fs.String("role", "phone", "phone, operator or admin")
	fs.StringVar(&u.Extension, "extension", "", "extension within the agency")
	fs.StringVar(&u.DisplayName, "name", "", "display name")
	password := fs.String("password", "", "password")
	if len(args) < 1 {
		return errors.New("add-user: want USERNAME [flags]")
	}
	u.Username = args[0]
	if err := fs.Parse(args[1:]); err != nil {
		return fmt.Errorf("add-user: %w", err)
	}
	switch directory.Role(*role) {
	case directory.RolePhone, directory.RoleOperator, directory.RoleAdmin:
		u.Role = directory.Role(*role)
	default:
		return fmt.Errorf("add-user: -role: %q is not one of phone, operator, admin", *role)
	}
	if *password == "" {
		return errors.New("add-user: -password is required")
	}
	if _, err := c.store.Agency(c.ctx, u.Agency); err != nil {
		return fmt.Errorf("add-user: -agency: %w", err)
	}
	u.SetPassword(c.realm, *password)
	return c.store.PutUser(c.ctx, u)
}

// writeBack stores the edited directory in the config file, after checking
// that the result is still a valid config.
func (c dirCommand) writeBack(file string, cfg *configs.Config) error {
	as, err := c.store.Agencies(c.ctx)
	if err != nil {
		return err
	}
	us, err := c.store.Users(c.ctx, "")
	if err != nil {
		return err
	}
	cfg.Network.Agencies = as
	cfg.Network.Users = cfg.Network.Users[:0]
	for _, u := range us {
		cfg.Network.Users = append(cfg.Network.Users, configs.User{User: u})
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	data, err := yaml.Marshal(cfg)
	if err != nil {
		return err
	}
	return os.WriteFile(file, data, 0o600)
}
